"""Posting alert payloads to /webhooks/grafana, and the remote services notifiers call: a stand-in at
agents.http.send, or a real HTTP server on loopback."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client

from alerts.auth import sign
from alerts.models import AlertDelivery
from tests.alerts.live import committed_workflows, live_service, synced_live  # noqa: F401 - live-server fixtures
from workflows.models import WorkflowRun

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "test-webhook-token"
HMAC_SECRET = "test-hmac-secret"
TIMESTAMP_HEADER = "X-Grafana-Alerting-Signature-Timestamp"
URL = "/webhooks/grafana"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def signed_headers(body: bytes, *, secret: str = HMAC_SECRET, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    return {"X-Grafana-Alerting-Signature": sign(secret, body, timestamp), TIMESTAMP_HEADER: timestamp}


def post(
    payload: Any = None,
    *,
    raw: bytes | None = None,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> Any:
    """POSTs a payload (or raw bytes) with the bearer token (None: no Authorization header)."""
    body = raw if raw is not None else json.dumps(payload).encode()
    all_headers = {"Authorization": f"Bearer {token}"} if token else {}
    all_headers.update(headers or {})
    return Client().generic("POST", URL, data=body, content_type=content_type, headers=all_headers)


@pytest.fixture(autouse=True)
def webhook_settings(settings: Any) -> Any:
    """Token auth, no HMAC, no allowlisted workflows, no runbook map: each test turns on what it checks."""
    settings.WEBHOOK_TOKEN = TOKEN
    settings.WEBHOOK_HMAC_SECRET = ""
    settings.WEBHOOK_TIMESTAMP_HEADER = TIMESTAMP_HEADER
    settings.WEBHOOK_DEDUP_WINDOW_SECONDS = 3600
    settings.WEBHOOK_MAX_BODY_BYTES = 1_048_576
    settings.ALERT_WORKFLOW_ALLOWLIST = []
    settings.RUNBOOK_URL_MAP = {}
    settings.RUNBOOK_BASE_URL = ""
    settings.SITE_URL = "https://cc.example.test"
    settings.GRAFANA_URL = "https://grafana.example.test"
    return settings


@pytest.fixture
def check_webhook(synced: None) -> Callable[..., WorkflowRun]:
    """``check_webhook("grafana_firing", {"severity": "critical"})``: POSTs the fixture, expects exactly one
    new run whose context contains ``expected``, and returns that run."""

    def check(name: str, expected: dict[str, Any], *, payload: dict[str, Any] | None = None) -> WorkflowRun:
        response = post(payload if payload is not None else fixture(name))
        assert response.status_code == 200, response.content
        body = response.json()
        assert len(body["workflowRunIds"]) == 1, body
        run = WorkflowRun.objects.get(id=body["workflowRunIds"][0])
        assert run.trigger == "alert"
        mismatches = {k: (run.context.get(k), v) for k, v in expected.items() if run.context.get(k) != v}
        assert not mismatches, f"context differs (got, expected): {mismatches}"
        delivery = AlertDelivery.objects.get(pk=body["deliveryId"])
        assert delivery.outcome == AlertDelivery.Outcome.PROCESSED
        assert list(delivery.runs.all()) == [run]
        return run

    return check


def variant(name: str, **changes: Any) -> dict[str, Any]:
    """A copy of a fixture with top-level fields replaced."""
    data = copy.deepcopy(fixture(name))
    data.update(changes)
    return data


class Remote:
    """Stands in for remote services at agents.http.send: records each request, answers from a script."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: list[httpx.Response] = []

    def answer(self, *responses: httpx.Response) -> None:
        self.answers.extend(responses)

    def __call__(self, request: httpx.Request, *, timeout: float) -> httpx.Response:
        self.requests.append(request)
        response = self.answers.pop(0) if self.answers else httpx.Response(200, text="ok")
        response.request = request
        return response

    def json(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)

    def to(self, host: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.host == host]


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> Iterator[Remote]:
    fake = Remote()
    monkeypatch.setattr("agents.http.send", fake)
    yield fake


@dataclass
class Received:
    """One request a Loopback server got, and when (time.monotonic())."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class Loopback:
    """A real HTTP server on 127.0.0.1: records every request and answers from a script, then 200 "ok"."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        loopback = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with loopback.lock:
                    loopback.received.append(
                        Received(self.command, self.path, dict(self.headers.items()), body, time.monotonic())
                    )
                    status, headers, answer = loopback.script.pop(0) if loopback.script else (200, {}, b"ok")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        """Queues the answer to the next request that has none queued yet."""
        with self.lock:
            self.script.append((status, {k.replace("_", "-"): v for k, v in headers.items()}, body))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    server = Loopback()
    yield server
    server.stop()
