"""Spans and metrics for the runner's events: the observers that ``connect()`` plugs into workflows.events
and approvals.events (the structured run log is observed by observability.runlog).

Each hook returns at once when telemetry is off in this process, and none of them lets an error escape:
a telemetry bug must never fail a step or roll back a run's transaction.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from opentelemetry import context as otel_context
from opentelemetry import trace

from observability import links, metrics, otel, tracing
from workflows import events

if TYPE_CHECKING:
    from agents.models import AgentRun
    from approvals.models import ApprovalRequest
    from workflows.models import RunStep, WorkflowRun

logger = logging.getLogger("observability")

TERMINAL = frozenset({"SUCCESS", "FAILED", "CANCELLED", "REJECTED"})
_FAILED_ATTEMPT = frozenset({"FAILED", "TIMED_OUT", "LOST"})


def _safe[**P, R](fn: Callable[P, R]) -> Callable[P, R | None]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
        if not otel.is_enabled():
            return None
        try:
            return fn(*args, **kwargs)
        except Exception:
            logger.exception("telemetry hook %s failed", fn.__name__)
            return None

    return wrapper


def in_run(run: WorkflowRun) -> AbstractContextManager[Any]:
    """Makes the run's trace current (unless a span of it already is), so log lines carry its trace id.

    A worker has no span open between attempts, and an operator's decision arrives in a request of its
    own trace; the run's events still belong to the run's trace.
    """
    if not otel.is_enabled():
        return nullcontext()
    try:
        current = trace.get_current_span().get_span_context()
        if current.is_valid and format(current.trace_id, "032x") == run.trace_id:
            return nullcontext()
        ctx = tracing.run_context(run)
        return nullcontext() if ctx is None else _attached(ctx)
    except Exception:
        logger.exception("telemetry hook in_run failed")
        return nullcontext()


@contextmanager
def _attached(ctx: Any) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def in_run_of(request: ApprovalRequest) -> AbstractContextManager[Any]:
    """``in_run`` for the run of an approval request."""
    if not otel.is_enabled():
        return nullcontext()
    return in_run(request.run)


@_safe
def run_transitioned(run: WorkflowRun, previous: str, target: str, *, reason: str = "", actor: str = "") -> None:
    if target in TERMINAL:
        # Emitted once the decision is committed; a rolled-back transition never happened.
        transaction.on_commit(functools.partial(_run_finished, copy.copy(run)), robust=True)
    elif previous in TERMINAL:
        carrier = tracing.reopened_context(run, timezone.now())
        if carrier != run.trace_context:
            run.trace_context = carrier
            type(run).objects.filter(pk=run.pk).update(trace_context=carrier)


@_safe
def _run_finished(run: WorkflowRun) -> None:
    span = tracing.emit_workflow_span(run, error_type=_failure_type(run) if run.status == "FAILED" else "")
    start = run.started_at or run.created_at
    end = run.finished_at or timezone.now()
    metrics.record_run_finished(
        workflow=run.workflow_slug,
        status=run.status,
        trigger=run.trigger,
        duration=(end - start).total_seconds(),
        context=tracing.span_context_of(span),
    )


def _failure_type(run: WorkflowRun) -> str:
    """The error type of the last failed attempt of the run's failed step; "" when no step failed it."""
    from agents.models import AgentRun

    attempt = (
        AgentRun.objects.filter(run_id=run.id, step__status="FAILED", status__in=_FAILED_ATTEMPT)
        .order_by(F("finished_at").desc(nulls_last=True), "-id")
        .values_list("error_type", flat=True)
        .first()
    )
    return attempt or ""


def attempt_scope(
    run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any]
) -> AbstractContextManager[Any]:
    if not otel.is_enabled():
        return nullcontext()
    try:
        return tracing.attempt_span(run, step, attempt, node)
    except Exception:
        logger.exception("telemetry hook attempt_scope failed")
        return nullcontext()


@_safe
def attempt_finished(run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any]) -> None:
    span = tracing.finish_attempt_span(run, step, attempt, node)
    metrics.record_attempt(
        workflow=run.workflow_slug,
        agent_type=attempt.agent_type,
        action=attempt.action,
        status=attempt.status,
        error_type=attempt.error_type,
        duration=attempt.duration_seconds,
        failed=attempt.status in _FAILED_ATTEMPT,
        context=tracing.span_context_of(span),
    )


@_safe
def retry_scheduled(run: WorkflowRun, step: RunStep, node: dict[str, Any], *, reason: str, delay: float) -> None:
    metrics.record_retry(agent_type=str(node.get("agent_type", "")), reason=reason)


@_safe
def approval_requested(request: ApprovalRequest) -> None:
    if request.span_id or not (request.run.trace_context or {}).get("traceparent"):
        return
    request.span_id = tracing.allocate_span_id()
    type(request).objects.filter(pk=request.pk).update(span_id=request.span_id)


@_safe
def approval_decided(request: ApprovalRequest, decision: str, approver: str, channel: str, wait_seconds: float) -> None:
    from workflows.models import WorkflowRun

    run = WorkflowRun.objects.only("id", "trace_context", "definition").get(pk=request.run_id)
    decided_at = request.decided_at or timezone.now()
    span = tracing.emit_approval_span(
        run,
        span_id=request.span_id,
        node=request.node_key,
        requested_at=request.requested_at,
        decided_at=decided_at,
        decision=decision,
        approver=approver,
        channel=channel,
    )
    metrics.record_approval_wait(
        workflow=run.workflow_slug,
        node=request.node_key,
        decision=decision,
        seconds=wait_seconds,
        context=tracing.span_context_of(span),
    )


class Telemetry(events.Telemetry):
    """The core's telemetry slot, filled: trace contexts from observability.tracing, links to Grafana."""

    def new_run_context(self) -> tuple[str, dict[str, str]]:
        return tracing.new_run_context()

    def run_trace_url(self, run: WorkflowRun) -> str | None:
        return links.run_trace_url(run)

    def attempt_span_url(self, run: WorkflowRun, attempt: AgentRun) -> str | None:
        return links.attempt_span_url(run, attempt)

    def run_links(self, run: WorkflowRun) -> dict[str, str]:
        return links.run_links(run)


@contextmanager
def worker_process(role: str) -> Iterator[None]:
    """Telemetry for a worker process's whole life: set up before it takes work, flushed when it stops."""
    otel.bootstrap(role=role)
    try:
        yield
    finally:
        otel.shutdown()


def trace_url_of_run(run_id: str) -> str:
    """The run's trace in Grafana Explore, for the notifier's messages; empty without GRAFANA_URL or a trace id."""
    from workflows.models import WorkflowRun

    run = WorkflowRun.objects.filter(id=run_id).first()
    if run is None or not run.trace_id:
        return ""
    return links.run_trace_url(run) or ""
