"""The one way this service makes outgoing HTTP requests.

It owns timeouts, bounded retries of transient failures and the private-address guard, so agents and
notifiers never talk to the network directly. Tests patch ``send`` at this boundary.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Any
from urllib.parse import urlparse

import httpx
from django.conf import settings


class TransportError(Exception):
    """An outgoing request failed. ``permanent`` means retrying the same request cannot succeed."""

    def __init__(self, message: str, *, permanent: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


def _check_destination(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise TransportError(f"refusing {url!r}: only http(s) URLs with a host are allowed", permanent=True)
    if settings.HTTP_ALLOW_PRIVATE_ADDRESSES:
        return
    try:
        infos = socket.getaddrinfo(parsed.hostname, parsed.port or 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise TransportError(f"cannot resolve {parsed.hostname!r}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise TransportError(
                f"refusing {parsed.hostname!r}: it resolves to the non-public address {address}",
                permanent=True,
            )


def send(request: httpx.Request, *, timeout: float) -> httpx.Response:
    """Sends one request. The seam that tests replace to stand in for remote services."""
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        return client.send(request)


def request(
    method: str,
    url: str,
    *,
    timeout: float | None = None,
    retries: int = 0,
    json: Any = None,
    content: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    deadline: float | None = None,
) -> httpx.Response:
    """Performs a request; raises TransportError for network errors and for 4xx/5xx answers.

    5xx, 429 and network errors are retried up to ``retries`` times with a short backoff, never past
    ``deadline`` (a time.monotonic() value); 4xx answers other than 408/429 are permanent.
    """
    _check_destination(url)
    limit = timeout or settings.HTTP_AGENT_TIMEOUT_SECONDS
    built = httpx.Request(method.upper(), url, json=json, content=content, headers=headers)
    attempt = 0
    while True:
        attempt += 1
        budget = limit if deadline is None else min(limit, deadline - time.monotonic())
        if budget <= 0:
            raise TransportError(f"{method.upper()} {url}: no time left before the step deadline")
        try:
            response = send(built, timeout=budget)
        except httpx.TimeoutException as exc:
            error = TransportError(f"{method.upper()} {url}: timed out after {budget:.1f}s ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            error = TransportError(f"{method.upper()} {url}: {type(exc).__name__}: {exc}")
        else:
            if response.status_code < 400:
                return response
            transient = response.status_code >= 500 or response.status_code in (408, 429)
            error = TransportError(
                f"{method.upper()} {url} answered {response.status_code}: {response.text[:200]}",
                permanent=not transient,
                status=response.status_code,
            )
        if error.permanent or attempt > retries:
            raise error
        time.sleep(min(0.2 * 2 ** (attempt - 1), 2.0))
