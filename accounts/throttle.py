"""Admin sign-in throttle: too many failures for one username from one address lock that pair out for a while.

Failures are rows in the database (LoginFailure), so every web process and machine sees the same count.
After ADMIN_LOGIN_MAX_FAILURES failures within ADMIN_LOGIN_WINDOW_SECONDS, the sign-in form answers 429
with a message saying when to try again, without checking the password. A successful sign-in clears the
pair's failures. The address is REMOTE_ADDR (behind a proxy that is the proxy's own address unless the
proxy sets it; gunicorn's forwarded_allow_ips governs that).
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import LoginFailure

logger = logging.getLogger("accounts.throttle")


def client_address(request: HttpRequest | None) -> str:
    return str((request.META.get("REMOTE_ADDR") if request is not None else "") or "unknown")[:45]


def _key(username: str) -> str:
    return username.strip().lower()[:150]


def retry_after(username: str, address: str) -> int:
    """Seconds until ``username`` may try again from ``address``; 0 when it is not throttled."""
    window = timedelta(seconds=settings.ADMIN_LOGIN_WINDOW_SECONDS)
    now = timezone.now()
    recent = LoginFailure.objects.filter(username=_key(username), ip_address=address, at__gte=now - window)
    times = list(recent.order_by("-at").values_list("at", flat=True)[: settings.ADMIN_LOGIN_MAX_FAILURES])
    if len(times) < settings.ADMIN_LOGIN_MAX_FAILURES:
        return 0
    # Locked until the oldest of the last N failures leaves the window.
    return max(1, math.ceil((times[-1] + window - now).total_seconds()))


def message(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return (
        "Too many failed sign-in attempts for this username from your address. "
        f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )


@receiver(user_login_failed)
def record_failure(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any) -> None:
    username = _key(str(credentials.get("username") or ""))
    if not username:
        return
    address = client_address(request)
    LoginFailure.objects.create(username=username, ip_address=address)
    # Keep the table small: failures older than the window are of no further use.
    cutoff = timezone.now() - timedelta(seconds=settings.ADMIN_LOGIN_WINDOW_SECONDS)
    LoginFailure.objects.filter(at__lt=cutoff).delete()
    logger.warning(
        "failed sign-in for %r from %s",
        username,
        address,
        extra={"event": "auth.login_failed", "username": username, "client_address": address},
    )


@receiver(user_logged_in)
def clear_failures(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    LoginFailure.objects.filter(username=_key(user.get_username()), ip_address=client_address(request)).delete()
