"""What telemetry does per attempt, in this process (no exporter, no database): the run's trace context is parsed
once per run object and carrier, and an attempt's start writes no log record where debug lines are off."""

from __future__ import annotations

import logging
import uuid

import pytest
from opentelemetry import trace

from agents.models import AgentRun
from observability import runlog, tracing
from workflows.models import RunStep, WorkflowRun

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _run(span: str) -> WorkflowRun:
    return WorkflowRun(id=uuid.uuid4(), trace_id=TRACE, trace_context={"traceparent": f"00-{TRACE}-{span}-01"})


def _span_id(ctx: object) -> str:
    return format(trace.get_current_span(ctx).get_span_context().span_id, "016x")  # type: ignore[arg-type]


def test_the_runs_trace_context_is_parsed_once_and_again_when_its_carrier_changes() -> None:
    run = _run("00f067aa0ba902b7")
    first = tracing.run_context(run)
    assert first is not None and _span_id(first) == "00f067aa0ba902b7"
    assert tracing.run_context(run) is first  # the same object: not parsed again
    # A retry of a failed run gives it a new workflow.execute span (reopened_context): its steps hang below that.
    run.trace_context = {"traceparent": f"00-{TRACE}-b7ad6b7169203331-01"}
    second = tracing.run_context(run)
    assert second is not None and _span_id(second) == "b7ad6b7169203331"
    run.trace_context = {}
    assert tracing.run_context(run) is None
    run.trace_context = {"traceparent": "00-not-a-valid-parent-01"}
    assert tracing.run_context(run) is None


def _attempt(run: WorkflowRun) -> tuple[RunStep, AgentRun]:
    step = RunStep(id=1, run=run, key="first", attempts=1)
    return step, AgentRun(run=run, step=step, attempt=1, agent_type="echo", action="")


def test_an_attempts_start_is_a_debug_line_written_only_where_debug_lines_are(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = _run("00f067aa0ba902b7")
    step, attempt = _attempt(run)
    with caplog.at_level(logging.INFO, logger="workflows.runs"):
        runlog.attempt_started(run, step, attempt, {})
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger="workflows.runs"):
        runlog.attempt_started(run, step, attempt, {})
    assert [(r.levelno, r.getMessage(), getattr(r, "event", "")) for r in caplog.records] == [
        (logging.DEBUG, "step first attempt 1 started", "step.start")
    ]
