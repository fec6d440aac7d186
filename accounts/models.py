from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.permissions import SCOPES

_PREFIX_LEN = 8


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for the API, acting as its user. Only a hash is stored; the token is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=_PREFIX_LEN, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(
        default=list,
        help_text="Any of: trigger, read, approve. They narrow what the user's permissions allow, never widen it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, user: models.Model, *, scopes: tuple[str, ...], name: str = "") -> tuple[ApiToken, str]:
        """Creates a token with ``scopes`` and returns it with the plain value, which is never stored."""
        unknown = set(scopes) - set(SCOPES)
        if not scopes:
            raise ValueError(f"a token needs at least one scope (of: {', '.join(SCOPES)})")
        if unknown:
            raise ValueError(f"unknown scope(s): {', '.join(sorted(unknown))} (known: {', '.join(SCOPES)})")
        prefix = secrets.token_hex(_PREFIX_LEN // 2)
        secret = secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=prefix, token_hash=_digest(secret), scopes=list(scopes))
        return token, f"cc_{prefix}_{secret}"

    @staticmethod
    def prefix_of(value: str) -> str:
        """The public prefix of a token value of the right shape, else "" (for logs: never the secret part)."""
        parts = value.split("_", 2)
        ok = len(parts) == 3 and parts[0] == "cc" and len(parts[1]) == _PREFIX_LEN and parts[1].isalnum()
        return parts[1] if ok else ""

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


class ThrottleCounter(models.Model):
    """Attempts counted for one key (a username or client address signing in, an address presenting wrong API
    tokens) in a fixed window; accounts/throttle.py takes them atomically and prunes ended windows."""

    key = models.CharField(max_length=200, primary_key=True)
    count = models.PositiveIntegerField(default=0)
    window_ends = models.FloatField(db_index=True, help_text="Unix time at which the count starts again.")

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"
