"""What the bootstrap takes from the environment: the sampler (OTEL_TRACES_SAMPLER / _ARG), the service name
(OTEL_SERVICE_NAME over the default) and the resource every signal carries."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import pytest
from django.test import override_settings

from observability.otel import DEFAULT_SERVICE_NAME, build_resource
from tests.observability.conftest import Service, Tokens, running_service
from tests.observability.receiver import Receiver

CLIENT = 3  # OTLP span kind


@pytest.fixture
def own_receiver() -> Iterator[Receiver]:
    """A receiver for one test, so that everything it holds came from that test's processes."""
    server = Receiver().start()
    yield server
    server.stop()


def _flags_of(run_id: str, django_db_blocker: Any) -> int:
    from workflows.models import WorkflowRun

    with django_db_blocker.unblock():
        carrier = WorkflowRun.objects.get(id=run_id).trace_context
    return int(carrier["traceparent"].split("-")[3], 16)


def _exported_but_spans(service: Service, run: dict[str, Any]) -> None:
    """Stops the service, which flushes everything it buffered, and checks it did export, just no spans."""
    service.stop()
    receiver = service.receiver
    assert receiver.points("workflow.runs"), "no metrics arrived: the processes exported nothing at all"
    assert receiver.logs(run["trace_id"]), "no log record of the run arrived"
    assert receiver.spans() == [], sorted({s.name for s in receiver.spans()})


@pytest.mark.parametrize(
    "sampler",
    [
        pytest.param({"OTEL_TRACES_SAMPLER": "always_off"}, id="always_off"),
        pytest.param({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}, id="traceidratio-0"),
    ],
)
@pytest.mark.slow
@pytest.mark.django_db
def test_a_sampler_that_samples_nothing_exports_no_span(
    sampler: dict[str, str], own_receiver: Receiver, committed: Tokens, django_db_blocker: Any
) -> None:
    with running_service(own_receiver, **sampler) as service:
        run = service.run(committed.trigger, "quick")
        assert run["status"] == "SUCCESS", run
        # The run still has a trace id (for its logs and its page), marked as not sampled for the workers.
        assert len(run["trace_id"]) == 32
        assert not _flags_of(run["id"], django_db_blocker) & 0x01
        _exported_but_spans(service, run)


@pytest.mark.slow
@pytest.mark.django_db
def test_a_parent_based_sampler_follows_the_incoming_decision(
    own_receiver: Receiver, committed: Tokens, django_db_blocker: Any
) -> None:
    with running_service(own_receiver, OTEL_TRACES_SAMPLER="parentbased_always_off") as service:
        sampled_trace = secrets.token_hex(16)
        sampled = service.run(committed.trigger, "quick", traceparent=f"00-{sampled_trace}-{secrets.token_hex(8)}-01")
        unsampled = service.run(committed.trigger, "quick")
        assert (sampled["status"], unsampled["status"]) == ("SUCCESS", "SUCCESS")
        assert sampled["trace_id"] == sampled_trace
        assert _flags_of(sampled["id"], django_db_blocker) & 0x01
        assert not _flags_of(unsampled["id"], django_db_blocker) & 0x01
        service.stop()
    # Only the request that came with a sampled traceparent is traced (the polls came without one), and with
    # it the whole run, in the worker too.
    names = sorted(s.name for s in own_receiver.spans(sampled_trace) if s.kind != CLIENT)
    assert names == ["POST api/workflows/<slug>/trigger", "agent.execute", "agent.execute", "workflow.execute"]
    assert {s.trace_id for s in own_receiver.spans()} == {sampled_trace}


@pytest.mark.slow
@pytest.mark.django_db
def test_the_service_name_and_resource_reach_every_signal_from_every_process(
    own_receiver: Receiver, committed: Tokens
) -> None:
    env = {
        "OTEL_SERVICE_NAME": "cc-override",
        "DEPLOYMENT_ENVIRONMENT": "staging",
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored-by-the-spec,team=ops",
    }
    with running_service(own_receiver, **env) as service:
        run = service.run(committed.trigger, "quick")
        assert run["status"] == "SUCCESS", run
        pids = {"web": service.web.proc.pid, "worker": service.worker.proc.pid}
        service.stop()
    host = socket.gethostname()
    expected = {
        f"{host}:{pid}": {
            "service.name": "cc-override",
            "service.version": metadata.version("commandcenter"),
            "deployment.environment": "staging",
            "service.instance.id": f"{host}:{pid}",
            "team": "ops",
        }
        for pid in pids.values()
    }
    resources = {
        "spans": [s.resource for s in own_receiver.spans(run["trace_id"])],
        "metrics": [p.resource for p in own_receiver.points()],
        "logs": [r.resource for r in own_receiver.logs(run["trace_id"])],
    }
    for signal, found in resources.items():
        assert found, f"no {signal} arrived"
        instances = {r["service.instance.id"] for r in found}
        assert instances == set(expected), (signal, instances)
        for resource in found:
            assert {k: resource.get(k) for k in expected[resource["service.instance.id"]]} == expected[
                resource["service.instance.id"]
            ], signal


def test_the_default_service_name_is_orchestration_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    with override_settings(DEPLOYMENT_ENVIRONMENT="production"):
        attributes = build_resource().attributes
    assert DEFAULT_SERVICE_NAME == "orchestration-service"
    assert attributes["service.name"] == "orchestration-service"
    assert attributes["service.version"] == metadata.version("commandcenter")
    assert attributes["deployment.environment"] == "production"
    assert attributes["service.instance.id"] == f"{socket.gethostname()}:{os.getpid()}"


def test_otel_service_name_wins_over_the_default_and_the_resource_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes,service.version=9.9")
    assert build_resource().attributes["service.name"] == "from-attributes"
    assert build_resource().attributes["service.version"] == "9.9"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-service-name")
    assert build_resource().attributes["service.name"] == "from-service-name"
