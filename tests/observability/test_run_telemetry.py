"""One run, watched over the wire: gunicorn takes the trigger and the decision, a separate worker process runs
the steps, and both export to an OTLP receiver in this test process (the web over HTTP/protobuf, the
worker over gRPC). The run has a step that fails once and then succeeds, and a step behind an approval.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from observability import metrics
from tests.observability.conftest import Tokens
from tests.observability.procs import free_port, http, service_env, start_gunicorn, start_worker
from tests.observability.receiver import Receiver, Span

# django_db makes pytest-django create the test database; the data itself is committed by `committed`.
pytestmark = [pytest.mark.slow, pytest.mark.django_db]

SERVER, INTERNAL, CLIENT = 2, 1, 3  # OTLP span kinds
ERROR = 2


@dataclass
class Scenario:
    run: dict[str, Any]
    trace_id: str
    incoming_span_id: str
    carrier: dict[str, str]
    receiver: Receiver
    seen_while_waiting: list[Span]


def _wait(what: str, check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def scenario(receiver: Receiver, committed: Tokens, django_db_blocker: Any) -> Iterator[Scenario]:
    from workflows.models import WorkflowRun

    # Every query and HTTP call a span too (the default sampler records them for a tenth of the traces).
    common = {"OTEL_METRIC_EXPORT_INTERVAL": "500", "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_TRACES_SAMPLER_ARG": "1"}
    web_env = service_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", **common
    )
    worker_env = service_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.grpc_endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc", **common
    )
    port = free_port()
    web = start_gunicorn(port, web_env)
    worker = start_worker(worker_env)
    base = f"http://127.0.0.1:{port}"
    try:
        trace_id, incoming = secrets.token_hex(16), secrets.token_hex(8)
        status, run, _ = http(
            "POST",
            f"{base}/api/workflows/observed/trigger",
            token=committed.trigger,
            body={"context": {"note": "over the wire"}},
            headers={"traceparent": f"00-{trace_id}-{incoming}-01"},
        )
        assert status == 202, run

        def request_id() -> int | None:
            status, page, _ = http("GET", f"{base}/api/approvals?status=PENDING", token=committed.approver)
            assert status == 200, page
            items = page["items"] if isinstance(page, dict) else page
            return next((item["id"] for item in items if item["run_id"] == run["id"]), None)

        approval = _wait("the approval request", request_id, 30)

        # Spans of finished steps reach the backend while the run still waits.
        def attempts() -> list[Span] | None:
            found = [s for s in receiver.spans(trace_id) if s.name == "agent.execute"]
            return found if len(found) >= 3 else None

        seen = receiver.wait_for("the finished attempts before the decision", attempts)

        # workflows.active is sampled from the database at each export: let one sample see the wait.
        def waiting_sampled() -> bool:
            return any(
                p.metric == "workflows.active"
                and p.attributes.get("workflow") == "observed"
                and p.attributes.get("status") == "WAITING_APPROVAL"
                and p.value >= 1
                for p in receiver.points()
            )

        receiver.wait_for("workflows.active to report the run waiting for approval", waiting_sampled)
        status, decided, _ = http(
            "POST", f"{base}/api/approvals/{approval}/approve", token=committed.approver, body={"comment": "ok"}
        )
        assert status == 200, decided
        with django_db_blocker.unblock():
            done = _wait(
                "the run to succeed",
                lambda: WorkflowRun.objects.filter(id=run["id"], status="SUCCESS").first(),
                30,
            )
            carrier = dict(done.trace_context)
        status, final, _ = http("GET", f"{base}/api/runs/{run['id']}", token=committed.trigger)
        assert status == 200, final
        receiver.wait_for(
            "workflow.execute", lambda: [s for s in receiver.spans(trace_id) if s.name == "workflow.execute"]
        )
        worker.stop()
        web.stop()
        yield Scenario(final, trace_id, incoming, carrier, receiver, list(seen))
    finally:
        for proc in (worker, web):
            if proc.proc.poll() is None:
                proc.stop()
            else:
                print(proc.name, proc.output()[-4000:])


def _one(spans: list[Span], name: str, **attrs: Any) -> Span:
    found = [s for s in spans if s.name == name and all(s.attributes.get(k) == v for k, v in attrs.items())]
    assert len(found) == 1, f"expected one {name} {attrs}, got {len(found)}: {[s.attributes for s in found]}"
    return found[0]


def test_the_run_keeps_the_trace_id_of_the_trigger_request(scenario: Scenario) -> None:
    assert scenario.run["trace_id"] == scenario.trace_id
    assert scenario.carrier["traceparent"].split("-")[1] == scenario.trace_id


def test_every_span_of_the_run_shares_one_trace_across_web_and_worker(scenario: Scenario) -> None:
    spans = scenario.receiver.spans(scenario.trace_id)
    names = {s.name for s in spans}
    assert {"workflow.execute", "agent.execute", "approval.wait"} <= names
    assert any(s.kind == SERVER for s in spans)
    assert any(s.attributes.get("db.system") == "postgresql" for s in spans)
    pids = {s.resource["service.instance.id"] for s in spans}
    assert len(pids) >= 2, pids  # a gunicorn worker and the worker process
    assert {s.resource["service.name"] for s in spans} == {"orchestration-service"}
    # Nothing of this run leaked into another trace.
    run_id = scenario.run["id"]
    assert all(
        s.trace_id == scenario.trace_id
        for s in scenario.receiver.spans()
        if s.attributes.get("workflow.run.id") == run_id
    )


def test_the_trigger_request_is_the_root_below_the_incoming_traceparent(scenario: Scenario) -> None:
    spans = scenario.receiver.spans(scenario.trace_id)
    trigger = [s for s in spans if s.kind == SERVER and "trigger" in s.name]
    assert len(trigger) == 1, [s.name for s in spans if s.kind == SERVER]
    assert trigger[0].parent_span_id == scenario.incoming_span_id
    assert trigger[0].name == "POST api/workflows/<slug>/trigger"
    workflow = _one(spans, "workflow.execute")
    assert workflow.parent_span_id == trigger[0].span_id
    # psycopg spans of the trigger request hang below it.
    assert any(s.parent_span_id == trigger[0].span_id and s.kind == CLIENT for s in spans)


def test_workflow_execute_spans_the_whole_run_with_its_attributes(scenario: Scenario) -> None:
    spans = scenario.receiver.spans(scenario.trace_id)
    workflow = _one(spans, "workflow.execute")
    assert workflow.span_id == scenario.carrier["traceparent"].split("-")[2]
    assert workflow.attributes == {
        "workflow.run.id": scenario.run["id"],
        "workflow.id": "observed",
        "workflow.name": "Observed run",
        "workflow.trigger": "api",
        "workflow.status": "SUCCESS",
    }
    children = [s for s in spans if s.name in ("agent.execute", "approval.wait")]
    assert all(workflow.start <= s.start and s.end <= workflow.end for s in children)


def test_each_attempt_is_an_agent_execute_child_of_workflow_execute(scenario: Scenario) -> None:
    spans = scenario.receiver.spans(scenario.trace_id)
    workflow = _one(spans, "workflow.execute")
    attempts = [s for s in spans if s.name == "agent.execute"]
    assert sorted((s.attributes["workflow.step.key"], s.attributes["agent.attempt"]) for s in attempts) == [
        ("prepare", 1),
        ("ship", 1),
        ("wobble", 1),
        ("wobble", 2),
    ]
    assert {s.parent_span_id for s in attempts} == {workflow.span_id}
    ok = _one(spans, "agent.execute", **{"workflow.step.key": "wobble", "agent.attempt": 2})
    assert ok.attributes == {
        "agent.id": "flaky",
        "agent.type": "flaky",
        "agent.action": "",
        "agent.attempt": 2,
        "agent.status": "SUCCESS",
        "workflow.run.id": scenario.run["id"],
        "workflow.step.key": "wobble",
    }
    assert ok.status_code != ERROR
    # The worker's own queries inside an attempt belong to it.
    assert any(s.parent_span_id in {a.span_id for a in attempts} and s.kind == CLIENT for s in spans)


def test_the_failed_attempt_has_error_status_and_an_exception_event(scenario: Scenario) -> None:
    failed = _one(
        scenario.receiver.spans(scenario.trace_id),
        "agent.execute",
        **{"workflow.step.key": "wobble", "agent.attempt": 1},
    )
    assert failed.status_code == ERROR
    assert failed.attributes["agent.status"] == "FAILED"
    events = [attrs for name, attrs in failed.events if name == "exception"]
    assert events == [
        {"exception.type": "AgentError", "exception.message": "flaky failure on attempt 1 of the first 1"}
    ]


def test_approval_wait_spans_request_to_decision(scenario: Scenario) -> None:
    spans = scenario.receiver.spans(scenario.trace_id)
    workflow = _one(spans, "workflow.execute")
    wait = _one(spans, "approval.wait")
    assert wait.parent_span_id == workflow.span_id
    assert wait.attributes["approval.decision"] == "approved"
    assert wait.attributes["approval.approver"] == "obs-approver"
    assert wait.attributes["approval.channel"] == "api"
    wobble_done = _one(spans, "agent.execute", **{"workflow.step.key": "wobble", "agent.attempt": 2})
    ship = _one(spans, "agent.execute", **{"workflow.step.key": "ship"})
    assert wobble_done.end <= wait.start + 5_000_000 and wait.end <= ship.start


def test_finished_attempts_are_exported_while_the_run_is_still_waiting(scenario: Scenario) -> None:
    assert {s.attributes["workflow.step.key"] for s in scenario.seen_while_waiting} == {"prepare", "wobble"}


CATALOGUE = {
    # name: (kind, unit, attribute keys)
    "workflow.runs": ("sum", "{run}", {"workflow", "status", "trigger"}),
    "workflow.duration": ("histogram", "s", {"workflow", "status"}),
    "workflows.active": ("gauge", "{run}", {"workflow", "status"}),
    "workflow.approval.wait_time": ("histogram", "s", {"workflow", "node", "decision"}),
    "agent.runs": ("sum", "{run}", {"agent_type", "status", "workflow"}),
    "agent.duration": ("histogram", "s", {"agent_type", "action", "status"}),
    "agent.errors": ("sum", "{error}", {"agent_type", "error_type"}),
    "agent.retries": ("sum", "{retry}", {"agent_type", "reason"}),
}
BUCKETS = {
    "workflow.duration": list(metrics.WORKFLOW_DURATION_BUCKETS),
    "agent.duration": list(metrics.AGENT_DURATION_BUCKETS),
    "workflow.approval.wait_time": list(metrics.APPROVAL_WAIT_BUCKETS),
}


def test_the_catalogue_metrics_arrive_with_exact_names_units_and_attributes(scenario: Scenario) -> None:
    receiver = scenario.receiver
    ours = [p for p in receiver.points() if p.scope == metrics.METER_NAME]
    assert {p.metric for p in ours} <= set(CATALOGUE) | {"webhook.alerts"}
    for name, (kind, unit, keys) in CATALOGUE.items():
        points = [p for p in ours if p.metric == name]
        assert points, f"{name} never arrived"
        assert {(p.kind, p.unit) for p in points} == {(kind, unit)}, name
        assert {frozenset(p.attributes) for p in points} == {frozenset(keys)}, name
        if name in BUCKETS:
            assert {tuple(p.bounds) for p in points} == {tuple(BUCKETS[name])}, name
    latest = {}
    for p in ours:
        latest[(p.metric, tuple(sorted(p.attributes.items())), p.resource["service.instance.id"])] = p.value

    def total(metric: str, **attrs: str) -> float:
        return sum(
            v for (m, a, _), v in latest.items() if m == metric and all(dict(a).get(k) == x for k, x in attrs.items())
        )

    assert total("workflow.runs", workflow="observed", status="SUCCESS", trigger="api") == 1
    assert total("agent.runs", agent_type="flaky", status="FAILED", workflow="observed") == 1
    assert total("agent.runs", agent_type="flaky", status="SUCCESS", workflow="observed") == 1
    assert total("agent.errors", agent_type="flaky", error_type="AgentError") == 1
    assert total("agent.retries", agent_type="flaky", reason="AgentError") == 1
    assert total("workflow.approval.wait_time", workflow="observed", node="ship", decision="approved") == 1
    assert any(p.exemplars for p in ours if p.metric == "agent.duration"), "agent.duration carries no exemplar"
    active = {(p.attributes["workflow"], p.attributes["status"]) for p in ours if p.metric == "workflows.active"}
    assert ("observed", "WAITING_APPROVAL") in active


def test_logs_arrive_with_the_trace_id_of_the_run(scenario: Scenario) -> None:
    logs = scenario.receiver.logs(scenario.trace_id)
    events = {(r.attributes.get("event"), r.resource["service.instance.id"]) for r in logs}
    services = {instance for _, instance in events}
    assert len(services) >= 2, events
    kinds = {event for event, _ in events}
    assert {"run.transition", "step.attempt", "approval.requested", "approval.outcome"} <= kinds, kinds
    transition = next(r for r in logs if r.attributes.get("event") == "run.transition")
    assert transition.attributes["run_id"] == scenario.run["id"]
    assert str(transition.body).startswith(f"run {scenario.run['id']}")
