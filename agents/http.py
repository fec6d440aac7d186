"""The one way this service makes outgoing HTTP requests.

It owns timeouts, bounded retries of transient failures and the private-address guard, so agents and
notifiers never talk to the network directly. Tests patch ``send`` at this boundary.

A request made with ``secret=True`` (a notifier's webhook URL, whose path is its credential) never shows its
URL: errors name it as ``redact(url)`` and the request carries the ``REDACT_URL`` extension, by which the
telemetry bootstrap (observability/otel.py) records it redacted on the HTTP client span.
"""

from __future__ import annotations

import email.utils
import ipaddress
import socket
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlparse

import httpx
from django.conf import settings

from config.env import PrivateAllowlist


class TransportError(Exception):
    """An outgoing request failed. ``permanent`` means retrying the same request cannot succeed.

    ``retry_after`` is the delay (seconds) the server asked for in Retry-After, when it asked: the runner
    waits at least that long before the step's next attempt.
    """

    def __init__(
        self, message: str, *, permanent: bool = False, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status
        self.retry_after = retry_after


# Request extension carrying the addresses the guard approved; the transport connects only to those.
PINNED_ADDRESSES = "commandcenter.pinned_addresses"
# Request extension marking a URL that is a secret: telemetry records it redacted.
REDACT_URL = "commandcenter.redact_url"
# How long a Retry-After answer may make us wait when the caller gave no deadline.
RETRY_AFTER_MAX_SECONDS = 60.0
# The longest Retry-After passed on to the runner: one answer never parks a step for days.
RETRY_AFTER_STEP_MAX_SECONDS = 3600.0
# What stands in for the secret parts of a URL.
REDACTED = "REDACTED"

# Link-local neighbours and cloud metadata services (169.254.169.254, AWS's fd00:ec2::254), and "this host"
# (0.0.0.0/8, ::). An address in one of these opens only through an allowlisted network that lies inside the
# same range, never through a host name or a wider network that happens to contain it: fd00::/8, a common
# choice for internal IPv6, contains fd00:ec2::254.
_GUARDED_RANGES: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "0.0.0.0/8", "::/128")
)


def redact(url: str) -> str:
    """The URL with only its scheme, host and port: the path, query and credentials may be a secret."""
    parsed = urlparse(url)
    if not parsed.scheme or not parsed.hostname:
        return "<url>"
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    try:
        port = f":{parsed.port}" if parsed.port else ""
    except ValueError:
        port = ""
    return f"{parsed.scheme}://{host}{port}/{REDACTED}"


def scrub(text: str, url: str) -> str:
    """``text`` (an error, a response body) with every echo of the secret parts of ``url`` replaced."""
    parsed = urlparse(url)
    path_and_query = parsed.path + (f"?{parsed.query}" if parsed.query else "")
    for part in (url, path_and_query, parsed.path, parsed.query, parsed.password):
        if part and len(part) > 1:
            text = text.replace(part, REDACTED)
    return text


def _permitted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, host: str, allowlist: PrivateAllowlist
) -> str | None:
    """None when a request may go to ``address`` (resolved from ``host``); else why not."""
    guarded = next((r for r in _GUARDED_RANGES if r.version == address.version and address in r), None)
    if guarded is None and address.is_global:
        return None
    for network in allowlist.networks:
        if network.version != address.version or address not in network:
            continue
        if guarded is None or network.subnet_of(guarded):  # type: ignore[arg-type]  # same version, checked above
            return None
    if guarded is None:
        if host in allowlist.hosts:
            return None
        return f"the non-public address {address}, which HTTP_ALLOWED_PRIVATE_NETWORKS does not list"
    return (
        f"the non-public address {address} (link-local, metadata or this host), which only a network "
        f"inside {guarded} listed in HTTP_ALLOWED_PRIVATE_NETWORKS opens"
    )


def _check_destination(url: str, shown: str | None = None) -> list[str]:
    """Refuses non-http(s) URLs and, unless HTTP_ALLOW_PRIVATE_ADDRESSES, hosts with a non-public address
    that HTTP_ALLOWED_PRIVATE_NETWORKS does not allow. ``shown`` is how errors name the URL.

    Returns the addresses that were checked (empty when private addresses are allowed): the request is then
    sent to one of them and never resolved again, so a second DNS answer cannot point it elsewhere.
    """
    shown = url if shown is None else shown
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        raise TransportError(f"refusing {shown!r}: the port is not a number from 0 to 65535", permanent=True) from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise TransportError(f"refusing {shown!r}: only http(s) URLs with a host are allowed", permanent=True)
    if settings.HTTP_ALLOW_PRIVATE_ADDRESSES:
        return []
    host = parsed.hostname.rstrip(".")
    try:
        infos = socket.getaddrinfo(host, port or (443 if parsed.scheme == "https" else 80), proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise TransportError(f"cannot resolve {host!r}: {exc}") from exc
    allowlist: PrivateAllowlist = settings.HTTP_ALLOWED_PRIVATE_NETWORKS
    addresses: list[str] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        refusal = _permitted(address, host, allowlist)
        if refusal:
            raise TransportError(f"refusing {host!r}: it resolves to {refusal}", permanent=True)
        if str(address) not in addresses:
            addresses.append(str(address))
    return addresses


class PinnedTransport(httpx.BaseTransport):
    """Connects to an address the guard approved instead of resolving the host name again.

    The URL's host becomes that address; the Host header (set when the request was built) and, for https,
    the TLS server name and certificate check stay on the original host name.
    """

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        addresses: list[str] = list(request.extensions.get(PINNED_ADDRESSES) or [])
        if not addresses:
            return self.inner.handle_request(request)
        host = request.url.host
        last: httpx.ConnectError | None = None
        for address in addresses:
            request.url = request.url.copy_with(host=address)
            if request.url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
            try:
                return self.inner.handle_request(request)
            except httpx.ConnectError as exc:
                last = exc
            finally:
                request.url = request.url.copy_with(host=host)
        assert last is not None
        raise last

    def close(self) -> None:
        self.inner.close()


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The delay a 429/503 answer asks for in Retry-After (seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def send(request: httpx.Request, *, timeout: float) -> httpx.Response:
    """Sends one request. The seam that tests replace to stand in for remote services."""
    with httpx.Client(timeout=timeout, follow_redirects=False, transport=PinnedTransport()) as client:
        return client.send(request)


MAX_REDIRECTS_LIMIT = 10


def redirect_problems(config: dict[str, Any]) -> list[str]:
    """An agent config's ``max_redirects`` problems: how many redirects it may follow, 0 (the default) to 10."""
    value = config.get("max_redirects", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REDIRECTS_LIMIT:
        return [f"max_redirects: must be a whole number from 0 to {MAX_REDIRECTS_LIMIT}, not {value!r}"]
    return []


def _prepare(request: httpx.Request, addresses: list[str], secret: bool) -> httpx.Request:
    if addresses:
        request.extensions[PINNED_ADDRESSES] = addresses
    if secret:
        request.extensions[REDACT_URL] = True
    return request


def _redirect(request: httpx.Request, response: httpx.Response, target: str) -> httpx.Request:
    """The request a redirect asks for, as browsers make it: 307 and 308 repeat the method and body, the others
    become a GET; credentials are not carried to another origin."""
    keep = response.status_code in (307, 308)
    method = request.method if keep or request.method == "HEAD" else "GET"
    origin = (request.url.scheme, request.url.host, request.url.port)
    same_origin = origin == (httpx.URL(target).scheme, httpx.URL(target).host, httpx.URL(target).port)
    dropped = {"host", "content-length", "transfer-encoding"}
    if not keep:
        dropped |= {"content-type"}
    if not same_origin:
        dropped |= {"authorization", "cookie"}
    headers = {k: v for k, v in request.headers.items() if k.lower() not in dropped}
    return httpx.Request(method, target, content=request.content if keep else None, headers=headers)


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
    secret: bool = False,
    max_redirects: int = 0,
) -> httpx.Response:
    """Performs a request; raises TransportError for network errors and for 3xx/4xx/5xx answers.

    5xx, 429 and network errors are retried up to ``retries`` times with a short backoff, never past
    ``deadline`` (a time.monotonic() value); 4xx answers other than 408/429 are permanent. A 429 or 503
    with Retry-After waits as long as it asks, unless that would pass the deadline (then it fails at once);
    either way a failure carries the asked delay as ``retry_after``. With ``secret`` the URL is never shown
    (see the module's docstring).

    A redirect is a permanent failure naming the host it points to: the request did not reach its
    destination. With ``max_redirects`` up to that many are followed, each to a destination the same guard
    allows (scheme, private addresses), as if it had been asked for directly.
    """
    shown = redact(url) if secret else url

    def error(message: str, **kwargs: Any) -> TransportError:
        return TransportError(scrub(message, url) if secret else message, **kwargs)

    addresses = _check_destination(url, shown)
    limit = timeout or settings.HTTP_AGENT_TIMEOUT_SECONDS
    first = _prepare(httpx.Request(method.upper(), url, json=json, content=content, headers=headers), addresses, secret)
    what = f"{method.upper()} {shown}"
    attempt = 0
    while True:
        attempt += 1
        wait: float | None = None  # what a 429/503 asked for in Retry-After
        built, hops = first, 0
        try:
            while True:
                budget = limit if deadline is None else min(limit, deadline - time.monotonic())
                if budget <= 0:
                    raise error(f"{what}: no time left before the step deadline")
                response = send(built, timeout=budget)
                if not 300 <= response.status_code < 400:
                    break
                location = response.headers.get("location", "")
                target = urljoin(str(built.url), location) if location else ""
                host = urlparse(target).hostname or "?"
                if not target or hops >= max_redirects:
                    followed = f" after following {hops}" if hops else ""
                    raise error(
                        f"{what} answered {response.status_code}"
                        + (f", a redirect to {host}" if target else " without a Location")
                        + f"{followed}: not delivered (redirects are followed only where the agent's "
                        "max_redirects allows)",
                        permanent=True,
                        status=response.status_code,
                    )
                hops += 1
                where = redact(target) if secret else target
                built = _prepare(_redirect(built, response, target), _check_destination(target, where), secret)
        except httpx.TimeoutException as exc:
            failure = error(f"{what}: timed out after {budget:.1f}s ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            failure = error(f"{what}: {type(exc).__name__}: {exc}")
        else:
            if response.status_code < 400:
                return response
            if response.status_code in (429, 503):
                wait = retry_after_seconds(response)
            transient = response.status_code >= 500 or response.status_code in (408, 429)
            failure = error(
                f"{what} answered {response.status_code}: {response.text[:200]}",
                permanent=not transient,
                status=response.status_code,
                retry_after=None if wait is None else min(wait, RETRY_AFTER_STEP_MAX_SECONDS),
            )
        if failure.permanent or attempt > retries:
            raise failure
        delay = min(0.2 * 2 ** (attempt - 1), 2.0)
        if wait is not None:
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise TransportError(
                    f"{failure}; it asked to retry after {wait:.0f}s, past the step deadline",
                    status=failure.status,
                    retry_after=failure.retry_after,
                )
            delay = max(delay, min(wait, RETRY_AFTER_MAX_SECONDS))
        time.sleep(delay)
