"""Notifier endpoint down, answering 503, or black-holed: bounded retries, then the step fails with a clear
error and the run ends FAILED instead of hanging."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agents.models import AgentRun
from tests.conftest import finish
from tests.reliability.conftest import free_port, record_result
from tests.workflows.helpers import define
from workflows.models import RunStatus
from workflows.services import trigger_workflow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ATTEMPTS = 3
RETRIES = 2  # per attempt, inside the outgoing-HTTP wrapper


class Unavailable(BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self) -> None:
        Unavailable.hits += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(503)
        self.send_header("Content-Length", "11")
        self.end_headers()
        self.wfile.write(b"maintenance")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def unavailable() -> Iterator[str]:
    Unavailable.hits = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T0SECRET"
    server.shutdown()
    server.server_close()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/T0SECRET"
    sock.close()


def notify_workflow(tmp_path: Path, url: str, timeout: float = 2.0):  # type: ignore[no-untyped-def]
    agent = {
        "slug": "down-hook",
        "type": "notifier",
        "config": {"channel": "webhook", "url": url, "retries": RETRIES, "timeout_seconds": timeout},
    }
    node = {
        "key": "notify",
        "agent": "down-hook",
        "inputs": {"message": "disk full"},
        "retry": {"max_attempts": ATTEMPTS, "backoff_seconds": 0.1, "backoff_max_seconds": 0.2},
        "timeout_seconds": 20,
    }
    return define(tmp_path, "notify-down", [node], [agent])


def check_failed(run: Any, expected: str) -> list[AgentRun]:
    assert run.status == RunStatus.FAILED
    attempts = list(run.attempts.order_by("attempt"))
    assert [a.status for a in attempts] == [AgentRun.Status.FAILED] * ATTEMPTS
    for a in attempts:
        assert a.error_message.startswith("webhook: delivery failed:"), a.error_message
        assert expected in a.error_message, a.error_message
        assert "T0SECRET" not in a.error_message  # the URL's secret path is never shown
    step = run.steps.get()
    assert step.status == "FAILED" and "delivery failed" in step.error
    return attempts


def test_endpoint_refusing_connections(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks/T0SECRET"  # nothing listens there
    run, _ = trigger_workflow(notify_workflow(tmp_path, url), context={})
    started = time.monotonic()
    run = finish(run, timeout=60)
    check_failed(run, "ConnectError")
    record_result(
        "notifier-refused",
        load="1 run, notifier step (webhook channel)",
        faults="endpoint port closed",
        lost=0,
        stuck=0,
        duplicates=0,
        attempts=ATTEMPTS,
        requests_per_attempt=RETRIES + 1,
        failed_after_s=round(time.monotonic() - started, 1),
    )


def test_endpoint_answering_503(tmp_path: Path, unavailable: str) -> None:
    run, _ = trigger_workflow(notify_workflow(tmp_path, unavailable), context={})
    started = time.monotonic()
    run = finish(run, timeout=60)
    check_failed(run, "answered 503: maintenance")
    assert Unavailable.hits == ATTEMPTS * (RETRIES + 1)
    record_result(
        "notifier-503",
        load="1 run, notifier step (webhook channel)",
        faults="endpoint answers 503",
        lost=0,
        stuck=0,
        duplicates=0,
        attempts=ATTEMPTS,
        requests=Unavailable.hits,
        failed_after_s=round(time.monotonic() - started, 1),
    )


def test_endpoint_black_holed(tmp_path: Path, black_hole: str) -> None:
    run, _ = trigger_workflow(notify_workflow(tmp_path, black_hole, timeout=0.5), context={})
    started = time.monotonic()
    run = finish(run, timeout=90)
    elapsed = time.monotonic() - started
    check_failed(run, "timed out after 0.5s")
    # Three attempts of three requests of 0.5 s each, plus backoff: bounded well under a minute.
    assert elapsed < 60
    record_result(
        "notifier-black-hole",
        load="1 run, notifier step (webhook channel)",
        faults="endpoint accepts and never answers (timeout 0.5 s)",
        lost=0,
        stuck=0,
        duplicates=0,
        attempts=ATTEMPTS,
        failed_after_s=round(elapsed, 1),
    )
