"""Telemetry never stands in the way: off, or with the collector unreachable, requests and runs go on;
on SIGTERM what is buffered is flushed, within a bounded time; /metrics adds up every gunicorn worker."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.observability.conftest import Tokens
from tests.observability.procs import (
    Process,
    free_port,
    http,
    service_env,
    start_gunicorn,
    start_runserver,
    start_worker,
)
from tests.observability.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An endpoint that accepts TCP connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
def closed_port() -> str:
    return f"http://127.0.0.1:{free_port()}"


def _run_quick_workflows(base: str, tokens: Tokens, django_db_blocker: Any, n: int = 3) -> list[dict[str, Any]]:
    from workflows.models import WorkflowRun

    runs = []
    for _ in range(n):
        status, run, took = http("POST", f"{base}/api/workflows/quick/trigger", token=tokens.trigger, body={})
        assert status == 202, run
        assert took < 1.0, f"a trigger request took {took:.2f}s"
        runs.append(run)
    deadline = time.monotonic() + 15
    with django_db_blocker.unblock():
        while time.monotonic() < deadline:
            statuses = set(WorkflowRun.objects.filter(id__in=[r["id"] for r in runs]).values_list("status", flat=True))
            if statuses == {"SUCCESS"}:
                return runs
            time.sleep(0.1)
    raise AssertionError(f"the runs did not succeed: {statuses}")


def _stop_all(*procs: Process) -> list[float]:
    return [proc.stop() for proc in procs]


def test_requests_and_runs_succeed_with_telemetry_disabled(committed: Tokens, django_db_blocker: Any) -> None:
    env = service_env(OTEL_SDK_DISABLED="true", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    port = free_port()
    web = start_runserver(port, env)
    worker = start_worker(env)
    try:
        runs = _run_quick_workflows(f"http://127.0.0.1:{port}", committed, django_db_blocker)
    finally:
        _stop_all(worker, web)
    assert {run["trace_id"] for run in runs} == {""}
    for proc in (web, worker):
        assert "opentelemetry" not in proc.output().lower(), proc.output()[-2000:]
        assert '"trace_id"' not in proc.output()


@pytest.mark.parametrize(("endpoint", "protocol"), [("black_hole", "grpc"), ("closed_port", "http/protobuf")])
def test_requests_and_runs_do_not_wait_on_an_unreachable_collector(
    committed: Tokens, django_db_blocker: Any, request: pytest.FixtureRequest, endpoint: str, protocol: str
) -> None:
    env = service_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=request.getfixturevalue(endpoint),
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_METRIC_EXPORT_INTERVAL="500",
        OTEL_BSP_SCHEDULE_DELAY="100",
        TELEMETRY_SHUTDOWN_TIMEOUT_SECONDS="2",
    )
    port = free_port()
    web = start_runserver(port, env)
    worker = start_worker(env)
    try:
        runs = _run_quick_workflows(f"http://127.0.0.1:{port}", committed, django_db_blocker)
        time.sleep(1)  # let the exporters try, and fail, a few times
        assert all(len(run["trace_id"]) == 32 for run in runs)
    finally:
        took = _stop_all(worker, web)
    assert max(took) < 2 + 3, f"stopping took {took}"


def test_sigterm_flushes_what_the_worker_has_buffered(
    committed: Tokens, django_db_blocker: Any, receiver: Receiver
) -> None:
    exporters = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    port = free_port()
    web = start_runserver(port, service_env(**exporters))
    # Without the flush nothing would leave the worker for a minute.
    worker = start_worker(
        service_env(**exporters, OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_METRIC_EXPORT_INTERVAL="60000")
    )
    try:
        (run,) = _run_quick_workflows(f"http://127.0.0.1:{port}", committed, django_db_blocker, n=1)
        time.sleep(0.5)
        assert not [s for s in receiver.spans(run["trace_id"]) if s.name == "workflow.execute"]
        worker.stop()
        spans = receiver.wait_for(
            "the worker's spans after SIGTERM",
            lambda: [s for s in receiver.spans(run["trace_id"]) if s.name in ("workflow.execute", "agent.execute")],
            timeout=5,
        )
        assert sorted(s.name for s in spans) == ["agent.execute", "agent.execute", "workflow.execute"]
        assert receiver.points("workflow.runs"), "the worker's metrics were not flushed"
    finally:
        _stop_all(worker, web)


def test_gunicorn_metrics_add_up_every_worker(committed: Tokens) -> None:
    port = free_port()
    # One thread per worker, so that concurrent requests spread over the processes.
    web = start_gunicorn(port, service_env(OTEL_SDK_DISABLED="true", GUNICORN_THREADS="1"), workers=3)
    base = f"http://127.0.0.1:{port}"
    multiproc = Path(web.env["PROMETHEUS_MULTIPROC_DIR"])
    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = list(pool.map(lambda _: http("GET", f"{base}/readyz")[0], range(60)))
        assert set(statuses) == {200}
        writers = {re.sub(r"\D", "", f.name) for f in multiproc.glob("counter_*.db")}
        assert len(writers) >= 2, f"only {writers} served requests"
        pattern = re.compile(
            r'^django_http_requests_total_by_view_transport_method_total\{[^}]*view="readyz"[^}]*\} (\S+)$', re.M
        )
        for _ in range(6):  # whichever worker answers, it reports everyone's requests
            status, page, _ = http("GET", f"{base}/metrics")
            assert status == 200
            assert sum(float(v) for v in pattern.findall(page)) == 60, page[-2000:]
    finally:
        took = web.stop()
    assert took < 10
