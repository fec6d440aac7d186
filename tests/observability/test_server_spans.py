"""Which requests the web tier traces: probes and scrapes (/healthz, /readyz, /metrics) never make a server
span; an API request makes one named by its route, not by its URL."""

from __future__ import annotations

import secrets
from urllib.parse import urlparse

import pytest

from tests.observability.conftest import Service, Tokens
from tests.observability.procs import http
from tests.observability.receiver import Span

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

SERVER = 2  # OTLP span kind
UNTRACED = ("/healthz", "/readyz", "/metrics")


def _traced_request(service: Service, method: str, path: str, token: str) -> Span:
    """Sends a request below a fresh traceparent and returns the server span it made."""
    trace_id = secrets.token_hex(16)
    status, body, _ = http(
        method,
        f"{service.base}{path}",
        token=token,
        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
    )
    assert status < 300, body
    found = service.receiver.wait_for(
        f"the server span of {method} {path}",
        lambda: [s for s in service.receiver.spans(trace_id) if s.kind == SERVER],
    )
    assert len(found) == 1, [s.name for s in found]
    return found[0]


def _path_of(span: Span) -> str:
    """The request's path, from whichever HTTP semantic conventions the instrumentation follows."""
    a = span.attributes
    path = a.get("url.path") or a.get("http.target") or urlparse(str(a.get("url.full") or a.get("http.url") or "")).path
    return str(path).split("?", 1)[0]


def test_probes_and_scrapes_make_no_server_span(service: Service, committed: Tokens) -> None:
    for path in UNTRACED:
        for _ in range(3):
            status, body, _ = http("GET", f"{service.base}{path}")
            assert status == 200, (path, body)
        # An incoming traceparent does not make them traced either.
        status, _, _ = http(
            "GET", f"{service.base}{path}", headers={"traceparent": f"00-{secrets.token_hex(16)}-{'1' * 16}-01"}
        )
        assert status == 200
    # Spans leave the process in the order they end, so once this later request's span has arrived, any span
    # of the probes before it would have too.
    _traced_request(service, "GET", "/api/workflows", committed.trigger)
    paths = [_path_of(s) for s in service.receiver.spans() if s.kind == SERVER]
    assert "/api/workflows" in paths
    assert not [path for path in paths if path in UNTRACED], paths
    # Nor do their database queries start traces of their own.
    assert not [s for s in service.receiver.spans() if s.parent_span_id == "" and s.kind != SERVER], [
        s.name for s in service.receiver.spans() if s.parent_span_id == ""
    ]


def test_an_api_request_is_a_server_span_named_by_its_route(service: Service, committed: Tokens) -> None:
    listing = _traced_request(service, "GET", "/api/workflows", committed.trigger)
    assert listing.name == "GET api/workflows"
    assert _path_of(listing) == "/api/workflows"
    assert listing.attributes["http.route"] == "api/workflows"

    run = service.run(committed.trigger, "quick")
    detail = _traced_request(service, "GET", f"/api/runs/{run['id']}", committed.trigger)
    assert detail.name == "GET api/runs/<run_id>"
    assert detail.attributes["http.route"] == "api/runs/<run_id>"
    assert _path_of(detail) == f"/api/runs/{run['id']}"
    assert run["id"] not in detail.name
