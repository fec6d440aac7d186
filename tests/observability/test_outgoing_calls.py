"""An agent's outgoing HTTP call is traced: the http agent, through agents/http.py, calls a real HTTP server on
the loopback interface; its client span hangs below the attempt's agent.execute span and the request carries
a ``traceparent`` naming that client span."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.observability.conftest import Service, Tokens
from tests.observability.receiver import Span

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

CLIENT = 3  # OTLP span kind


@dataclass
class Remote:
    """An HTTP server that answers every POST with a small JSON body and keeps what it was sent."""

    server: ThreadingHTTPServer
    received: list[tuple[dict[str, str], Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    received: list[tuple[dict[str, str], Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
            payload = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Remote(server, received)
    server.shutdown()
    server.server_close()


@dataclass
class Called:
    run: dict[str, Any]
    attempt: Span
    client: Span
    headers: dict[str, str]


@pytest.fixture(scope="module")
def called(service: Service, committed: Tokens, remote: Remote) -> Called:
    run = service.run(committed.trigger, "outgoing", {"url": remote.url})
    assert run["status"] == "SUCCESS", run
    assert [body for _, body in remote.received] == [{"hello": "world"}]

    def spans() -> tuple[Span, list[Span]] | None:
        got = service.receiver.spans(run["trace_id"])
        attempts = [s for s in got if s.name == "agent.execute"]
        if not attempts:
            return None
        below = [s for s in got if s.parent_span_id == attempts[0].span_id and s.kind == CLIENT]
        http_calls = [s for s in below if "http.request.method" in s.attributes or "http.method" in s.attributes]
        return (attempts[0], http_calls) if http_calls else None

    attempt, clients = service.receiver.wait_for("the agent's client span", spans)
    assert len(clients) == 1, [(s.name, s.attributes) for s in clients]
    return Called(run, attempt, clients[0], remote.received[0][0])


def test_the_agent_call_is_a_client_span_below_its_attempt(called: Called) -> None:
    assert called.attempt.attributes["agent.type"] == "http"
    assert called.attempt.attributes["agent.status"] == "SUCCESS"
    assert called.client.trace_id == called.run["trace_id"]
    assert called.client.kind == CLIENT
    assert called.client.name == "POST"
    method = called.client.attributes.get("http.request.method", called.client.attributes.get("http.method"))
    status = called.client.attributes.get("http.response.status_code", called.client.attributes.get("http.status_code"))
    assert (method, status) == ("POST", 200)
    assert called.attempt.start <= called.client.start and called.client.end <= called.attempt.end


def test_the_request_carries_the_client_spans_traceparent(called: Called) -> None:
    version, trace_id, span_id, flags = called.headers["traceparent"].split("-")
    assert version == "00"
    assert int(flags, 16) & 0x01, "the call is not marked sampled"
    assert trace_id == called.run["trace_id"]
    assert span_id == called.client.span_id
