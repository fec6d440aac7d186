"""Authentication of the alert webhook: a bearer token, Grafana's HMAC signature, or both.

Grafana's webhook contact point signs with HMAC-SHA256 (hex) over ``<timestamp>:<body>`` when its HMAC
settings name a timestamp header (the Unix time in seconds goes in that header), and over the body alone
when they do not. The signature header defaults to ``X-Grafana-Alerting-Signature`` in Grafana's UI and
documentation; when that field is left empty, the sender falls back to ``X-Grafana-Alert-Signature``, so
both are read. Every comparison of a secret runs in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from django.conf import settings

SIGNATURE_HEADERS = ("X-Grafana-Alerting-Signature", "X-Grafana-Alert-Signature")


class AuthenticationFailed(Exception):
    """The request is not from the configured sender; the message says which check failed."""


def is_configured() -> bool:
    return bool(settings.WEBHOOK_TOKEN or settings.WEBHOOK_HMAC_SECRET)


def sign(secret: str, body: bytes, timestamp: str = "") -> str:
    """The hex HMAC-SHA256 Grafana sends: over ``timestamp:body``, or the body alone without a timestamp."""
    message = f"{timestamp}:".encode() + body if timestamp else body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str:
    return (headers.get(name) or "").strip()


def check_token(headers: Mapping[str, str], token: str) -> None:
    scheme, _, credentials = _header(headers, "Authorization").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise AuthenticationFailed("missing bearer token (Authorization: Bearer <WEBHOOK_TOKEN>)")
    if not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        raise AuthenticationFailed("wrong bearer token")


def check_signature(headers: Mapping[str, str], body: bytes, secret: str, *, now: float | None = None) -> None:
    signature = next((_header(headers, name) for name in SIGNATURE_HEADERS if _header(headers, name)), "")
    if not signature:
        raise AuthenticationFailed(f"missing signature header {SIGNATURE_HEADERS[0]}")
    timestamp = ""
    header = settings.WEBHOOK_TIMESTAMP_HEADER
    if header:
        timestamp = _header(headers, header)
        if not timestamp:
            raise AuthenticationFailed(f"missing timestamp header {header}")
        try:
            sent = int(timestamp)
        except ValueError:
            raise AuthenticationFailed(f"timestamp header {header} is not a Unix time: {timestamp[:40]!r}") from None
        skew = abs((time.time() if now is None else now) - sent)
        tolerance = settings.WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS
        if skew > tolerance:
            raise AuthenticationFailed(f"stale timestamp: {skew:.0f}s away from now (allowed: {tolerance}s)")
    expected = sign(secret, body, timestamp)
    if not hmac.compare_digest(signature.lower().encode(), expected.encode()):
        raise AuthenticationFailed("signature does not match the body")


def authenticate(headers: Mapping[str, str], body: bytes) -> None:
    """Passes when every configured check passes (none configured: always); else AuthenticationFailed."""
    if settings.WEBHOOK_TOKEN:
        check_token(headers, settings.WEBHOOK_TOKEN)
    if settings.WEBHOOK_HMAC_SECRET:
        check_signature(headers, body, settings.WEBHOOK_HMAC_SECRET)
