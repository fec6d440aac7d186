"""How the bootstrap reads the environment, and the tracing pieces it installs (no processes, no network)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from opentelemetry import trace
from opentelemetry.metrics._internal.instrument import _ProxyInstrument
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from observability import metrics
from observability.otel import exporters_for, otlp_protocol, sdk_disabled
from observability.sampling import PresetIdGenerator, QuietRootsSampler, preset_ids


def test_nothing_is_exported_until_an_endpoint_or_an_exporter_is_configured() -> None:
    assert exporters_for("traces", {}) == []
    assert exporters_for("metrics", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp"]
    assert exporters_for("logs", {"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://collector:4318/v1/logs"}) == ["otlp"]
    assert exporters_for("traces", {"OTEL_TRACES_EXPORTER": "console"}) == ["console"]
    assert exporters_for("metrics", {"OTEL_METRICS_EXPORTER": "prometheus,otlp"}) == ["prometheus", "otlp"]
    assert exporters_for("traces", {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}) == []


def test_it_refuses_an_unknown_exporter() -> None:
    with pytest.raises(ImproperlyConfigured, match="OTEL_TRACES_EXPORTER"):
        exporters_for("traces", {"OTEL_TRACES_EXPORTER": "prometheus"})


def test_the_protocol_defaults_to_http_and_can_be_set_per_signal() -> None:
    assert otlp_protocol("traces", {}) == "http/protobuf"
    assert otlp_protocol("traces", {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == "grpc"
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf"}
    assert otlp_protocol("logs", env) == "http/protobuf"
    with pytest.raises(ImproperlyConfigured):
        otlp_protocol("traces", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_sdk_disabled_follows_the_standard_variable() -> None:
    assert sdk_disabled({"OTEL_SDK_DISABLED": "true"})
    assert not sdk_disabled({"OTEL_SDK_DISABLED": "false"})
    assert not sdk_disabled({})


def test_client_spans_without_a_parent_are_dropped() -> None:
    sampler = QuietRootsSampler(ALWAYS_ON)
    assert sampler.should_sample(None, 1, "SELECT", SpanKind.CLIENT).decision == Decision.DROP
    assert sampler.should_sample(None, 1, "GET /", SpanKind.SERVER).decision == Decision.RECORD_AND_SAMPLE
    parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(1, 2, True, TraceFlags(1))))
    assert sampler.should_sample(parent, 1, "SELECT", SpanKind.CLIENT).decision == Decision.RECORD_AND_SAMPLE


def test_a_preset_span_id_is_used_once() -> None:
    ids = PresetIdGenerator()
    with preset_ids(span_id=0xABC, trace_id=0xDEF):
        assert ids.generate_trace_id() == 0xDEF
        assert ids.generate_span_id() == 0xABC
        assert ids.generate_span_id() != 0xABC
    assert ids.generate_span_id() != 0xABC


def test_no_instrument_name_ends_in_total() -> None:
    instruments = [
        metrics.workflow_runs,
        metrics.workflow_duration,
        metrics.workflows_active,
        metrics.approval_wait_time,
        metrics.agent_runs,
        metrics.agent_duration,
        metrics.agent_errors,
        metrics.agent_retries,
        metrics.webhook_alerts,
    ]
    # Before a meter provider is set these are the API's proxies, which keep the name privately.
    names = [i._name if isinstance(i, _ProxyInstrument) else getattr(i, "name", "") for i in instruments]
    assert len(set(names)) == 9
    assert not [n for n in names if n.endswith((".total", "_total"))]


def test_the_resource_is_hashed_once_and_equals_the_sdks_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from opentelemetry.sdk import resources
    from opentelemetry.sdk.resources import Resource

    from observability.otel import build_resource

    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,team=ops")
    resource = build_resource()
    plain = Resource(resource.attributes, resource.schema_url)
    assert resource == plain and plain == resource and hash(resource) == hash(plain)
    assert resource.attributes["team"] == "ops" and resource.attributes["deployment.environment"] == "staging"
    # The exporters hash the resource of every span, log record and metric they group: no JSON each time.
    calls: list[object] = []

    def dumps(*args: Any, **kwargs: Any) -> str:
        calls.append(args)
        return json.dumps(*args, **kwargs)

    monkeypatch.setattr(resources, "dumps", dumps)
    for _ in range(3):
        hash(resource)
    assert calls == []
    hash(plain)
    assert len(calls) == 1
