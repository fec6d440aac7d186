"""Throttles for guessing credentials: admin sign-in and API tokens.

Both count attempts in ThrottleCounter rows, so every web process and machine sees the same counts, and each
count is taken with one atomic upsert (INSERT ... ON CONFLICT DO UPDATE ... RETURNING): two requests can never
both read "4 of 5" and both go ahead.

Sign-in: an attempt takes a slot for its username and one for its client address *before* the password is
checked; past ADMIN_LOGIN_MAX_FAILURES for the username (from any address) or ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS
for the address (any usernames) within ADMIN_LOGIN_WINDOW_SECONDS, the form answers 429 without checking the
password. A successful sign-in gives its slots back, so only failures (and attempts in flight) count. The
per-username limit means a guesser can keep a user out for one window; the limit is what stops a distributed
guess at one account.

API tokens: a request whose token is missing the mark (wrong, revoked, malformed) counts against its client
address; past API_TOKEN_MAX_FAILURES within API_TOKEN_FAILURE_WINDOW_SECONDS, requests with an Authorization
header from that address get 429 without any token being looked up, until the window ends. Each web process
remembers the addresses it has seen blocked, so a blocked guesser costs no database work there.

The address is REMOTE_ADDR (behind a proxy that is the proxy's own address unless the proxy sets it; gunicorn's
forwarded_allow_ips governs that).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db import connection
from django.db.models import F
from django.dispatch import receiver
from django.http import HttpRequest

from accounts.models import ThrottleCounter

logger = logging.getLogger("accounts.throttle")

_BLOCKED_MAX = 10_000  # addresses each process remembers as blocked, at most


def client_address(request: HttpRequest | None) -> str:
    return str((request.META.get("REMOTE_ADDR") if request is not None else "") or "unknown")[:45]


def _username(username: str) -> str:
    return username.strip().lower()[:150]


def take(key: str, limit: int, window: float) -> int:
    """Counts one attempt for ``key`` atomically; returns 0 when it is within ``limit`` per ``window`` seconds,
    else the seconds until the window ends."""
    now = time.time()
    quote = connection.ops.quote_name
    table, key_, count, ends = (quote(n) for n in (ThrottleCounter._meta.db_table, "key", "count", "window_ends"))
    # A fixed window: the first attempt after the last window ended starts a new one.
    sql = (
        f"INSERT INTO {table} ({key_}, {ends}, {count}) VALUES (%s, %s, 1) "  # noqa: S608 - our own names
        f"ON CONFLICT ({key_}) DO UPDATE SET "
        f"{count} = CASE WHEN {table}.{ends} <= %s THEN 1 ELSE {table}.{count} + 1 END, "
        f"{ends} = CASE WHEN {table}.{ends} <= %s THEN %s ELSE {table}.{ends} END "
        f"RETURNING {count}, {ends}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [key, now + window, now, now, now + window])
        taken, window_ends = cursor.fetchone()
    if taken <= limit:
        return 0
    return max(1, math.ceil(window_ends - now))


def give_back(key: str) -> None:
    """Returns one attempt taken for ``key`` (it succeeded)."""
    ThrottleCounter.objects.filter(key=key, count__gt=0).update(count=F("count") - 1)


def prune() -> None:
    """Forgets counters whose window ended, so the table holds only recent attempts."""
    ThrottleCounter.objects.filter(window_ends__lt=time.time()).delete()


# --- Admin sign-in ----------------------------------------------------------------------------------------


def sign_in_keys(username: str, address: str) -> list[tuple[str, int]]:
    keys = [(f"sign-in-address:{address}", settings.ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS)]
    if _username(username):
        keys.append((f"sign-in-user:{_username(username)}", settings.ADMIN_LOGIN_MAX_FAILURES))
    return keys


def take_sign_in(username: str, address: str) -> int:
    """Takes this attempt's slots; 0 when the password may be checked, else the seconds to wait."""
    waits = [take(key, limit, settings.ADMIN_LOGIN_WINDOW_SECONDS) for key, limit in sign_in_keys(username, address)]
    return max(waits)


def message(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return (
        "Too many failed sign-in attempts for this username or from your address. "
        f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )


@receiver(user_login_failed)
def record_failure(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any) -> None:
    username = _username(str(credentials.get("username") or ""))
    address = client_address(request)
    prune()
    logger.warning(
        "failed sign-in for %r from %s",
        username,
        address,
        extra={"event": "auth.login_failed", "username": username, "client_address": address},
    )


@receiver(user_logged_in)
def clear_failures(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    address = client_address(request)
    ThrottleCounter.objects.filter(key=f"sign-in-user:{_username(user.get_username())}").delete()
    give_back(f"sign-in-address:{address}")


# --- API tokens -------------------------------------------------------------------------------------------

_blocked: dict[str, float] = {}  # address -> time.time() when its block ends, as this process last saw it
_blocked_lock = threading.Lock()


def token_wait(address: str) -> int:
    """Seconds until ``address`` may present API tokens again, as far as this process knows; 0 when it may."""
    until = _blocked.get(address)
    if until is None:
        return 0
    left = until - time.time()
    if left <= 0:
        with _blocked_lock:
            _blocked.pop(address, None)
        return 0
    return math.ceil(left)


def token_failed(address: str, prefix: str = "") -> int:
    """Counts a wrong API token from ``address`` and logs it; returns the seconds it is now blocked (0: not)."""
    window = settings.API_TOKEN_FAILURE_WINDOW_SECONDS
    wait = take(f"api-token-address:{address}", settings.API_TOKEN_MAX_FAILURES, window)
    logger.warning(
        "invalid API token%s from %s%s",
        f" {prefix}…" if prefix else "",
        address,
        f"; further tokens from it refused for {wait}s" if wait else "",
        extra={"event": "auth.token_failed", "client_address": address, "token_prefix": prefix, "blocked": wait},
    )
    if wait:
        now = time.time()
        with _blocked_lock:
            if len(_blocked) >= _BLOCKED_MAX:
                for stale in [a for a, until in _blocked.items() if until <= now] or list(_blocked)[
                    : _BLOCKED_MAX // 10
                ]:
                    _blocked.pop(stale, None)
            _blocked[address] = now + wait
        prune()
    return wait
