"""One trace per run: the trigger request is its root, and the run's spans hang below it.

A run lives across processes (web, any number of workers) and days (approvals), so no span object can
stay open for its whole life. Instead the span ids are chosen up front and the spans are emitted when
their outcome is known:

- At trigger time ``new_run_context`` stores on the run its trace id and a W3C carrier whose
  ``traceparent`` names the *future* ``workflow.execute`` span (and ``parent``, the trigger request's span).
- Every ``agent.execute`` (one per attempt) and ``approval.wait`` span is a child of that span, through a
  remote-parent context built from the carrier; children are exported as soon as they end.
- ``workflow.execute`` itself is emitted when the run reaches a terminal status, by whichever process
  does it, with the pre-allocated span id (``PresetIdGenerator``) and start time = when the run started.
  ``approval.wait`` works the same way: span id allocated when requested, span emitted at the decision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from observability import otel
from observability.sampling import preset_ids

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from agents.models import AgentRun
    from workflows.models import RunStep, WorkflowRun

tracer = trace.get_tracer("commandcenter")
_propagator = TraceContextTextMapPropagator()
_ids = RandomIdGenerator()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Statuses of a run and of an attempt that make their span an error.
_FAILED_RUN = {"FAILED"}
_FAILED_ATTEMPT = {"FAILED", "TIMED_OUT", "LOST"}


def _ns(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def _hex_span(span_id: int) -> str:
    return format(span_id, "016x")


def _root_flags(trace_id: int) -> TraceFlags:
    provider = trace.get_tracer_provider()
    sampler = getattr(provider, "sampler", None)
    if sampler is None:
        return TraceFlags(TraceFlags.SAMPLED)
    decision = sampler.should_sample(None, trace_id, "workflow.execute", SpanKind.INTERNAL).decision
    return TraceFlags(TraceFlags.SAMPLED if decision.is_sampled() else TraceFlags.DEFAULT)


def new_run_context() -> tuple[str, dict[str, str]]:
    """The trace id and carrier for a run triggered now: below the current span, or a new trace.

    Returns ("", {}) when telemetry is off in this process.
    """
    if not otel.is_enabled():
        return "", {}
    current = trace.get_current_span().get_span_context()
    workflow_span = _ids.generate_span_id()
    if current.is_valid:
        trace_id, flags, state = current.trace_id, current.trace_flags, current.trace_state
    else:
        trace_id = _ids.generate_trace_id()
        flags, state = _root_flags(trace_id), TraceState()
    carrier = {"traceparent": f"00-{trace_id:032x}-{_hex_span(workflow_span)}-{int(flags):02x}"}
    if state:
        carrier["tracestate"] = state.to_header()
    if current.is_valid:
        carrier["parent"] = _hex_span(current.span_id)
    return format(trace_id, "032x"), carrier


def reopened_context(run: WorkflowRun, now: datetime) -> dict[str, str]:
    """A new workflow.execute span id for a run that leaves a terminal status (retry of failed steps).

    The span that ended with the run stays as it was; the steps of the retry belong to the new one.
    """
    carrier = dict(run.trace_context)
    parsed = _parse(carrier)
    if parsed is None:
        return carrier
    trace_id, _, flags = parsed
    carrier["traceparent"] = f"00-{trace_id:032x}-{_hex_span(_ids.generate_span_id())}-{int(flags):02x}"
    carrier["opened_at"] = now.isoformat()
    return carrier


def _parse(carrier: dict[str, str]) -> tuple[int, int, TraceFlags] | None:
    span = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
    if not span.is_valid:
        return None
    return span.trace_id, span.span_id, span.trace_flags


_RUN_CONTEXT_ATTR = "_otel_run_context"


def run_context(run: WorkflowRun) -> Context | None:
    """A context whose (remote) current span is the run's workflow.execute span.

    Kept on the run object for as long as its carrier stays the same: each attempt of a run asks for it
    several times (its span, its log records), and a worker's chain of steps shares one object.
    """
    carrier = run.trace_context or {}
    if "traceparent" not in carrier:
        return None
    key = (carrier["traceparent"], carrier.get("tracestate"))
    cached = run.__dict__.get(_RUN_CONTEXT_ATTR)
    if cached is not None and cached[0] == key:
        return cached[1]
    ctx: Context | None = _propagator.extract(carrier)
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        ctx = None
    run.__dict__[_RUN_CONTEXT_ATTR] = (key, ctx)
    return ctx


def _workflow_attributes(run: WorkflowRun) -> dict[str, Any]:
    definition = run.definition or {}
    return {
        "workflow.run.id": str(run.id),
        "workflow.id": str(definition.get("slug", "")),
        "workflow.name": str(definition.get("name", "")),
        "workflow.trigger": str(run.trigger),
        "workflow.status": str(run.status),
    }


def emit_workflow_span(run: WorkflowRun, *, error_type: str = "") -> Any:
    """Emits workflow.execute for a run that just reached a terminal status; returns the span.

    A FAILED run's span gets ERROR status and an ``exception`` event: the type is ``error_type`` (that of the
    attempt that failed the run) or ``RunFailed`` when no attempt did, the message is the run's error.
    """
    if not otel.is_enabled():
        return None
    carrier = run.trace_context or {}
    parsed = _parse(carrier)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    parent_hex = carrier.get("parent")
    if parent_hex:
        parent = SpanContext(
            trace_id,
            int(parent_hex, 16),
            is_remote=True,
            trace_flags=flags,
            trace_state=TraceState.from_header([carrier["tracestate"]]) if carrier.get("tracestate") else None,
        )
        ctx = trace.set_span_in_context(NonRecordingSpan(parent))
        preset = preset_ids(span_id=span_id)
    else:
        ctx = otel_context.Context()
        preset = preset_ids(span_id=span_id, trace_id=trace_id)
    opened = carrier.get("opened_at")
    start = datetime.fromisoformat(opened) if opened else (run.started_at or run.created_at)
    end_ns = max(_ns(run.finished_at or start), _ns(start))
    with preset:
        span = tracer.start_span(
            "workflow.execute", context=ctx, attributes=_workflow_attributes(run), start_time=_ns(start)
        )
    if run.status in _FAILED_RUN:
        span.add_event(
            "exception",
            {"exception.type": error_type or "RunFailed", "exception.message": (run.error or "")[:2000]},
            timestamp=end_ns,
        )
        span.set_status(Status(StatusCode.ERROR, (run.error or "")[:500] or None))
    span.end(end_time=end_ns)
    return span


# --- agent.execute --------------------------------------------------------------------------------------

_SPAN_ATTR = "_otel_span"


def _attempt_attributes(run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any]) -> dict[str, Any]:
    return {
        "agent.id": str(node.get("agent", "")),
        "agent.type": attempt.agent_type,
        "agent.action": attempt.action,
        "agent.attempt": int(attempt.attempt),
        "workflow.run.id": str(run.id),
        "workflow.step.key": step.key,
    }


def attempt_span(
    run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any]
) -> AbstractContextManager[Any]:
    """Makes the attempt's agent.execute span current while the executor runs.

    The span stays open after the block; ``finish_attempt_span`` ends it once the outcome is recorded.
    """
    if not otel.is_enabled():
        return nullcontext()
    parent = run_context(run)
    if parent is None:
        return nullcontext()
    return _attempt_scope(parent, run, step, attempt, node)


@contextmanager
def _attempt_scope(
    parent: Context, run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any]
) -> Iterator[Any]:
    span = tracer.start_span(
        "agent.execute",
        context=parent,
        attributes=_attempt_attributes(run, step, attempt, node),
        start_time=_ns(attempt.started_at),
    )
    setattr(attempt, _SPAN_ATTR, span)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        if span.get_span_context().trace_flags.sampled:
            # The reaper emits the span under this id if this worker dies before finishing the attempt.
            attempt.span_id = _hex_span(span.get_span_context().span_id)
            type(attempt).objects.filter(pk=attempt.pk).update(span_id=attempt.span_id)
        yield span
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))
        span.set_attribute("agent.status", "FAILED")
        span.end()
        delattr(attempt, _SPAN_ATTR)
        raise
    finally:
        otel_context.detach(token)


def finish_attempt_span(run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any]) -> Any:
    """Ends the attempt's span with its outcome; emits one if the attempt never had one open here.

    That is the case for attempts that failed before the executor ran (bad template, missing agent) and
    for attempts the reaper closes after their worker died (same span id as the worker chose, if any).
    Returns the span, for exemplars.
    """
    if not otel.is_enabled():
        return None
    span = getattr(attempt, _SPAN_ATTR, None)
    if span is None:
        parent = run_context(run)
        if parent is None:
            return None
        preset = preset_ids(span_id=int(attempt.span_id, 16)) if attempt.span_id else nullcontext()
        with preset:
            span = tracer.start_span(
                "agent.execute",
                context=parent,
                attributes=_attempt_attributes(run, step, attempt, node),
                start_time=_ns(attempt.started_at),
            )
    else:
        delattr(attempt, _SPAN_ATTR)
    span.set_attribute("agent.status", attempt.status)
    if attempt.status in _FAILED_ATTEMPT:
        span.add_event(
            "exception",
            {
                "exception.type": attempt.error_type or attempt.status,
                "exception.message": (attempt.error_message or "")[:2000],
            },
        )
        span.set_status(Status(StatusCode.ERROR, f"{attempt.error_type}: {attempt.error_message}"[:500]))
    end = attempt.finished_at
    span.end(end_time=_ns(end) if end else None)
    return span


# --- approval.wait --------------------------------------------------------------------------------------


def allocate_span_id() -> str:
    """A span id chosen now for a span emitted later (approval.wait); "" when telemetry is off."""
    return _hex_span(_ids.generate_span_id()) if otel.is_enabled() else ""


def emit_approval_span(
    run: WorkflowRun,
    *,
    span_id: str,
    node: str,
    requested_at: datetime,
    decided_at: datetime,
    decision: str,
    approver: str,
    channel: str,
) -> Any:
    """Emits approval.wait, from the request to the decision, as a child of workflow.execute."""
    if not otel.is_enabled():
        return None
    parent = run_context(run)
    if parent is None:
        return None
    preset = preset_ids(span_id=int(span_id, 16)) if span_id else nullcontext()
    with preset:
        span = tracer.start_span(
            "approval.wait",
            context=parent,
            attributes={
                "workflow.run.id": str(run.id),
                "workflow.step.key": node,
                "approval.decision": decision,
                "approval.approver": approver,
                "approval.channel": channel,
            },
            start_time=_ns(requested_at),
        )
    span.end(end_time=max(_ns(decided_at), _ns(requested_at)))
    return span


def span_context_of(span: Any) -> Context | None:
    """A context with ``span`` current, for recording measurements with exemplars."""
    if span is None:
        return None
    return trace.set_span_in_context(span)
