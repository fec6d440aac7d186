"""Structured logs on stdout: one JSON object per line, with the trace and span of the current context."""

from __future__ import annotations

import json
import logging
import math
import socket
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from observability.logs import JsonFormatter
from tests.observability.conftest import Service, Tokens

HEX = set("0123456789abcdef")


def _record(
    message: str = "hello %s",
    *,
    extra: dict[str, Any] | None = None,
    exc_info: Any = None,
    sinfo: str | None = None,
) -> logging.LogRecord:
    args = ("world",) if "%s" in message else ()
    return logging.getLogger("tests.logs").makeRecord(
        "tests.logs", logging.INFO, __file__, 1, message, args, exc_info, extra=extra, sinfo=sinfo
    )


def _strict(line: str) -> dict[str, Any]:
    """Parses one line as JSON the way Loki and most other readers do: no NaN or Infinity."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    assert "\n" not in line, line
    parsed = json.loads(line, parse_constant=refuse)
    assert isinstance(parsed, dict)
    return parsed


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    provider = TracerProvider()
    yield provider.get_tracer("tests.logs")
    provider.shutdown()


def test_a_line_inside_a_span_carries_its_trace_and_span_ids(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("work") as span:
        entry = _strict(JsonFormatter().format(_record()))
    context = span.get_span_context()
    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")
    assert len(entry["trace_id"]) == 32 and len(entry["span_id"]) == 16
    assert set(entry["trace_id"] + entry["span_id"]) <= HEX
    assert entry["message"] == "hello world"
    assert (entry["level"], entry["logger"]) == ("info", "tests.logs")


def test_a_line_in_a_runs_remote_context_carries_the_runs_trace(tracer: trace.Tracer) -> None:
    # What observability.hooks.in_run makes current between a run's attempts: the run's remote span.
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with trace.use_span(NonRecordingSpan(remote)):
        entry = _strict(JsonFormatter().format(_record()))
    assert (entry["trace_id"], entry["span_id"]) == (format(0xABC, "032x"), format(0xDEF, "016x"))


def test_a_line_outside_any_span_has_no_trace_fields(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("before"):
        pass
    entry = _strict(JsonFormatter().format(_record()))
    assert "trace_id" not in entry and "span_id" not in entry
    assert entry["message"] == "hello world"


def test_extra_fields_are_kept_and_the_instrumentations_are_not() -> None:
    run_id = uuid.uuid4()
    record = _record(
        extra={"event": "run.transition", "run_id": run_id, "attempt": 2, "otelTraceID": "0", "otelSpanID": "0"}
    )
    entry = _strict(JsonFormatter().format(record))
    assert entry["event"] == "run.transition"
    assert entry["run_id"] == str(run_id)
    assert entry["attempt"] == 2
    assert not [key for key in entry if key.startswith("otel")]


def test_multi_line_messages_and_tracebacks_stay_on_one_line() -> None:
    try:
        raise RuntimeError("line one\nline two")
    except RuntimeError:
        record = _record("first\nsecond «ü»", exc_info=sys.exc_info())
    line = JsonFormatter().format(record)
    entry = _strict(line)
    assert entry["message"] == "first\nsecond «ü»"
    assert "RuntimeError: line one\nline two" in entry["exception"]
    assert "Traceback" in entry["exception"]


def test_a_stack_requested_with_the_record_is_kept() -> None:
    record = _record(sinfo="Stack (most recent call last):\n  File x, line 1")
    entry = _strict(JsonFormatter().format(record))
    assert entry["stack"].startswith("Stack (most recent call last):")


def test_a_socket_is_written_as_the_address_of_its_client() -> None:
    # runserver's request lines (django.server) carry the connection's socket as "request".
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        client_port = client.getsockname()[1]
        connection, _ = server.accept()
        with connection:
            entry = _strict(JsonFormatter().format(_record(extra={"request": connection})))
    assert entry["request"] == f"127.0.0.1:{client_port}"
    closed = _strict(JsonFormatter().format(_record(extra={"request": connection})))
    assert closed["request"] == "disconnected"


def test_a_socket_whose_client_reset_the_connection_is_written_as_disconnected() -> None:
    # runserver logs a request after answering it, by which time the client may have reset the connection.
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        connection, _ = server.accept()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()  # linger 0: a reset, not a graceful close
        with connection:
            connection.settimeout(5)
            with pytest.raises(ConnectionResetError):
                connection.recv(1)
            entry = _strict(JsonFormatter().format(_record(extra={"request": connection})))
    assert entry["request"] == "disconnected"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="infinity"),
        pytest.param({("a", "b"): 1}, id="tuple-keys"),
        pytest.param({"when": datetime(2026, 1, 2, tzinfo=UTC), "ratio": -math.inf}, id="nested"),
    ],
)
def test_a_value_json_cannot_hold_still_gives_one_valid_json_line(value: Any) -> None:
    record = _record(extra={"odd": value, "event": "odd.value"})
    entry = _strict(JsonFormatter().format(record))
    assert entry["event"] == "odd.value"
    assert entry["message"] == "hello world"
    assert isinstance(entry["odd"], str) and entry["odd"]


@pytest.mark.slow
@pytest.mark.django_db
def test_the_services_log_lines_carry_the_runs_trace_and_span_ids(service: Service, committed: Tokens) -> None:
    run = service.run(committed.trigger, "quick")
    assert run["status"] == "SUCCESS", run
    spans = service.receiver.spans(run["trace_id"])
    workflow = service.receiver.wait_for(
        "the run's workflow.execute",
        lambda: [s for s in service.receiver.spans(run["trace_id"]) if s.name == "workflow.execute"],
    )[0]
    trigger = next(s for s in spans if s.span_id == workflow.parent_span_id)

    def json_lines(output: str) -> list[dict[str, Any]]:
        # runserver's banner is plain text on stdout (test_log_streams.py: every log line is JSON).
        return [_strict(line) for line in output.splitlines() if line.startswith("{")]

    web = [e for e in json_lines(service.web.output()) if e.get("run_id") == run["id"]]
    worker = [e for e in json_lines(service.worker.output()) if e.get("run_id") == run["id"]]
    assert {e["event"] for e in web} == {"run.transition"}
    assert {e["event"] for e in worker} == {"run.transition", "step.attempt"}
    # The trigger request logs the new run inside its server span; the worker inside the run's span.
    assert {(e["trace_id"], e["span_id"]) for e in web} == {(run["trace_id"], trigger.span_id)}
    assert {(e["trace_id"], e["span_id"]) for e in worker} == {(run["trace_id"], workflow.span_id)}
    started = next(e for e in json_lines(service.worker.output()) if str(e["message"]).startswith("worker "))
    assert "trace_id" not in started and "span_id" not in started
