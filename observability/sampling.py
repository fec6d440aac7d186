"""The tracer provider's parts of our own: which spans are kept (QuietRootsSampler, RunsSampler) and which ids
a span gets (PresetIdGenerator, so that a span emitted after the fact keeps the id its children already point
to).

observability.otel installs them; observability.tracing presets the ids.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from opentelemetry.trace.span import TraceState

# Ids handed to the next span started in this context (see PresetIdGenerator).
_next_trace_id: contextvars.ContextVar[int] = contextvars.ContextVar("next_trace_id", default=0)
_next_span_id: contextvars.ContextVar[int] = contextvars.ContextVar("next_span_id", default=0)


class PresetIdGenerator(RandomIdGenerator):
    """Random ids, except for a span whose ids were chosen earlier (see ``preset_ids``)."""

    def generate_span_id(self) -> int:
        preset = _next_span_id.get()
        if preset:
            _next_span_id.set(0)
            return preset
        return super().generate_span_id()

    def generate_trace_id(self) -> int:
        preset = _next_trace_id.get()
        if preset:
            _next_trace_id.set(0)
            return preset
        return super().generate_trace_id()


@contextmanager
def preset_ids(*, span_id: int, trace_id: int = 0) -> Iterator[None]:
    span_token = _next_span_id.set(span_id)
    trace_token = _next_trace_id.set(trace_id)
    try:
        yield
    finally:
        _next_span_id.reset(span_token)
        _next_trace_id.reset(trace_token)


class QuietRootsSampler(Sampler):
    """The configured sampler, except that client spans without a parent are dropped.

    Database queries and HTTP calls outside any request or run (the worker's queue polling, the
    maintenance loop, metric collection) would otherwise each start a trace of their own.
    """

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind == SpanKind.CLIENT and not trace.get_current_span(parent_context).get_span_context().is_valid:
            return SamplingResult(Decision.DROP)
        return self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"QuietRoots{{{self.delegate.get_description()}}}"


# The spans that make up a run, emitted by this module: always recorded by RunsSampler.
RUN_SPANS = frozenset({"workflow.execute", "agent.execute", "approval.wait"})


class RunsSampler(Sampler):
    """Every run traced, the detail sampled: ``OTEL_TRACES_SAMPLER=runs`` (the default here).

    Always recorded: the run's own spans (``RUN_SPANS``) and every server span, so the request that triggers a
    run (API, re-run, alert webhook, console) is always the root of the run's trace, even below a caller's
    unsampled ``traceparent``. Everything else (psycopg queries, outgoing HTTP calls, other internal spans) is
    recorded for the fraction ``ratio`` of traces, decided on the trace id as ``traceidratio`` does: a trace
    either has all its detail spans, in every process, or none.

    A span whose local parent was dropped is dropped too, so no recorded span names a parent that was never
    exported; the always-recorded spans are the exception, and none of them is started below a detail span in
    this service (a run's spans hang below workflow.execute or the server span). A server span below a caller's
    dropped span (for instance a run's HTTP call back into this service, not sampled) is recorded with the
    caller's span id as its parent, which no backend will hold: it shows as a trace with a missing parent.
    """

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self._detail = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        state = parent.trace_state if parent.is_valid else None
        if kind == SpanKind.SERVER or name in RUN_SPANS:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, state)
        if parent.is_valid and not parent.is_remote and not parent.trace_flags.sampled:
            return SamplingResult(Decision.DROP, None, state)
        return self._detail.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"Runs{{{self.ratio}}}"
