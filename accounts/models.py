from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

SCOPES = ("trigger", "read", "approve")
_PREFIX_LEN = 8


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for the API, acting as its user. Only a hash is stored; the token is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=_PREFIX_LEN, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, help_text="Any of: trigger, read, approve.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, user: models.Model, *, name: str = "", scopes: tuple[str, ...] = SCOPES) -> tuple[ApiToken, str]:
        """Creates a token and returns it with the plain value, which is never stored."""
        unknown = set(scopes) - set(SCOPES)
        if unknown:
            raise ValueError(f"unknown scope(s): {', '.join(sorted(unknown))} (known: {', '.join(SCOPES)})")
        prefix = secrets.token_hex(_PREFIX_LEN // 2)
        secret = secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=prefix, token_hash=_digest(secret), scopes=list(scopes))
        return token, f"cc_{prefix}_{secret}"

    @classmethod
    def authenticate(cls, value: str) -> ApiToken | None:
        """The active token matching ``value`` (constant-time comparison), recording its use."""
        parts = value.split("_", 2)
        if len(parts) != 3 or parts[0] != "cc" or len(parts[1]) != _PREFIX_LEN:
            return None
        token = cls.objects.select_related("user").filter(prefix=parts[1], revoked_at__isnull=True).first()
        if token is None or not hmac.compare_digest(token.token_hash, _digest(parts[2])):
            return None
        if not token.user.is_active:
            return None
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
            cls.objects.filter(id=token.id).update(last_used_at=now)
            token.last_used_at = now
        return token

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class LoginFailure(models.Model):
    """One failed admin sign-in, kept for the throttle's window (accounts/throttle.py) and then pruned."""

    username = models.CharField(max_length=150)
    ip_address = models.CharField(max_length=45)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["username", "ip_address", "at"], name="loginfailure_key_at")]

    def __str__(self) -> str:
        return f"{self.username} from {self.ip_address} at {self.at:%Y-%m-%d %H:%M:%S}"
