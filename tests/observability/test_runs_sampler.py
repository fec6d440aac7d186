"""The default sampler, ``runs``: every run's own spans and every server span recorded, the rest (queries, HTTP
calls) for a configurable fraction of the traces. Decisions are checked on the SDK's own tracer provider here,
and over the wire, from the service's processes to an OTLP receiver, in test_runs_sampling.py."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from observability.otel import DEFAULT_DETAIL_RATIO, traces_sampler
from observability.sampling import RUN_SPANS, QuietRootsSampler, RunsSampler

BELOW = 0x0000000000000000_0000000000000001  # low 64 bits far below every bound but 0
ABOVE = 0xFFFFFFFFFFFFFFFF_FFFFFFFFFFFFFFFF  # low 64 bits at the top: only ratio 1 keeps it


def _provider(ratio: float) -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=QuietRootsSampler(RunsSampler(ratio)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("tests"), exporter


def _unsampled_parent(*, remote: bool) -> Context:
    return trace.set_span_in_context(NonRecordingSpan(SpanContext(ABOVE, 0x1234, remote, TraceFlags(0))))


def _parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None, span.name
    return span.parent.span_id


def test_runs_is_the_default_sampler_with_a_tenth_of_the_detail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    sampler = traces_sampler()
    assert isinstance(sampler, QuietRootsSampler) and isinstance(sampler.delegate, RunsSampler)
    assert sampler.delegate.ratio == DEFAULT_DETAIL_RATIO == 0.1
    assert sampler.get_description() == "QuietRoots{Runs{0.1}}"


def test_the_ratio_comes_from_otel_traces_sampler_arg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "runs")
    for raw, ratio in (("0", 0.0), ("1", 1.0), (" 0.25 ", 0.25)):
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", raw)
        assert traces_sampler().delegate.ratio == ratio


@pytest.mark.parametrize("raw", ["lots", "1.5", "-0.1", "nan"])
def test_a_ratio_outside_0_to_1_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "runs")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", raw)
    with pytest.raises(ImproperlyConfigured, match=r"OTEL_TRACES_SAMPLER_ARG=.*a number from 0 to 1"):
        traces_sampler()


def test_the_sdk_samplers_are_still_chosen_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    sampler = traces_sampler()
    assert isinstance(sampler.delegate, ParentBased)
    assert "TraceIdRatioBased{0.5}" in sampler.get_description()


@pytest.mark.parametrize("name", sorted(RUN_SPANS))
def test_the_runs_own_spans_are_recorded_at_ratio_0_even_below_an_unsampled_parent(name: str) -> None:
    sampler = RunsSampler(0.0)
    for parent in (None, _unsampled_parent(remote=True), _unsampled_parent(remote=False)):
        result = sampler.should_sample(parent, ABOVE, name, SpanKind.INTERNAL, {"workflow.run.id": "r"})
        assert result.decision == Decision.RECORD_AND_SAMPLE
        assert result.attributes == {"workflow.run.id": "r"}


def test_server_spans_are_recorded_at_ratio_0_even_below_a_callers_unsampled_traceparent() -> None:
    sampler = RunsSampler(0.0)
    for parent in (None, _unsampled_parent(remote=True)):
        result = sampler.should_sample(parent, ABOVE, "POST api/workflows/<slug>/trigger", SpanKind.SERVER)
        assert result.decision == Decision.RECORD_AND_SAMPLE


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 1.0])
def test_detail_spans_follow_the_trace_id_as_traceidratio_does(ratio: float) -> None:
    sampler, reference = RunsSampler(ratio), TraceIdRatioBased(ratio)
    parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(BELOW, 0x1234, False, TraceFlags(1))))
    for trace_id in (BELOW, ABOVE, 0x42 << 64 | 0x1999999999999999, 0x42 << 64 | 0x199999999999999A, 2**63):
        got = sampler.should_sample(parent, trace_id, "SELECT", SpanKind.CLIENT).decision
        assert got == reference.should_sample(None, trace_id, "SELECT").decision, hex(trace_id)
    # 0 and 1 are exact: nothing, everything.
    if ratio in (0.0, 1.0):
        decisions = {sampler.should_sample(parent, t, "SELECT", SpanKind.CLIENT).decision for t in (BELOW, ABOVE)}
        assert decisions == {Decision.RECORD_AND_SAMPLE if ratio else Decision.DROP}


def test_at_ratio_0_a_request_is_its_server_span_and_the_runs_spans_hang_below_it() -> None:
    tracer, exporter = _provider(0.0)
    with tracer.start_as_current_span("POST api/workflows/<slug>/trigger", kind=SpanKind.SERVER) as server:
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as query:
            assert not query.is_recording()
        with (
            tracer.start_as_current_span("workflow.execute") as run,
            tracer.start_as_current_span("agent.execute"),
            tracer.start_as_current_span("POST", kind=SpanKind.CLIENT),
        ):
            pass
    names = {s.name: s for s in exporter.get_finished_spans()}
    assert sorted(names) == ["POST api/workflows/<slug>/trigger", "agent.execute", "workflow.execute"]
    assert _parent_id(names["workflow.execute"]) == server.get_span_context().span_id
    assert _parent_id(names["agent.execute"]) == run.get_span_context().span_id
    assert names["workflow.execute"].context.trace_flags.sampled


def test_at_ratio_1_every_span_is_recorded_with_its_parent() -> None:
    tracer, exporter = _provider(1.0)
    with (
        tracer.start_as_current_span("POST api/workflows/<slug>/trigger", kind=SpanKind.SERVER) as server,
        tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT),
    ):
        pass
    query, request = exporter.get_finished_spans()
    assert (query.name, request.name) == ("SELECT", "POST api/workflows/<slug>/trigger")
    assert _parent_id(query) == server.get_span_context().span_id


def test_the_children_of_a_dropped_span_are_dropped_even_if_their_trace_is_in_the_ratio() -> None:
    """Whatever dropped the parent (here the caller's own sampler, in this process): no recorded span may name a
    parent that was never exported. The run's spans are the exception: they are always recorded."""
    tracer, exporter = _provider(1.0)
    with trace.use_span(NonRecordingSpan(SpanContext(BELOW, 0x1234, False, TraceFlags(0)))):
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as query:
            assert not query.is_recording()
        with tracer.start_as_current_span("render") as internal:
            assert not internal.is_recording()
        with tracer.start_as_current_span("agent.execute") as attempt:
            assert attempt.is_recording()
    assert [s.name for s in exporter.get_finished_spans()] == ["agent.execute"]


def test_client_spans_without_a_parent_are_still_dropped() -> None:
    tracer, exporter = _provider(1.0)
    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
        pass
    assert exporter.get_finished_spans() == ()
