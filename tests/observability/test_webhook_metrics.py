"""webhook.alerts over the wire: each alert posted to /webhooks/grafana is counted by source, the alert's
status and what became of it, and the alert's run is traced from the webhook request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from observability import metrics
from tests.observability.conftest import WEBHOOK_TOKEN, Service, Tokens
from tests.observability.procs import http
from tests.observability.receiver import Point

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

FIXTURES = Path(__file__).resolve().parent.parent / "alerts" / "fixtures"
SERVER = 2  # OTLP span kind


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def _post(service: Service, payload: Any, token: str = WEBHOOK_TOKEN) -> tuple[int, Any]:
    status, body, _ = http("POST", f"{service.base}/webhooks/grafana", token=token, body=payload)
    return status, body


@pytest.fixture(scope="module")
def posted(service: Service, committed: Tokens) -> dict[str, Any]:
    """Alerts of every outcome, posted once; returns the first delivery's answer."""
    status, first = _post(service, _fixture("grafana_firing"))  # two firing alerts
    assert status == 200 and len(first["workflowRunIds"]) == 1, first
    status, again = _post(service, _fixture("grafana_firing"))
    assert status == 200 and again["deduplicated"] == 2, again
    status, body = _post(service, _fixture("alertmanager_firing"))  # one firing alert
    assert status == 200, body
    status, body = _post(service, _fixture("grafana_resolved"))  # one resolved alert
    assert status == 200, body
    status, body = _post(service, _fixture("grafana_firing"), token="not-the-token")
    assert status == 401, body
    status, body = _post(service, {"version": "1", "alerts": "not a list"})
    assert status == 422, body
    return dict(first)


def _latest(points: list[Point]) -> dict[tuple[str, str, str], float]:
    """The last cumulative value of each series (one web process sends them all)."""
    latest: dict[tuple[str, str, str], float] = {}
    for p in points:
        latest[(p.attributes["source"], p.attributes["status"], p.attributes["outcome"])] = p.value
    return latest


EXPECTED = {
    ("grafana", "firing", "triggered"): 2,
    ("grafana", "firing", "deduplicated"): 2,
    ("alertmanager", "firing", "triggered"): 1,
    ("grafana", "resolved", "triggered"): 1,
    ("unknown", "unknown", "unauthorized"): 1,
    ("grafana", "unknown", "rejected"): 1,
}


def test_each_alert_is_counted_by_source_status_and_outcome(service: Service, posted: dict[str, Any]) -> None:
    receiver = service.receiver
    receiver.wait_for(
        "webhook.alerts for every delivery",
        lambda: _latest(receiver.points("webhook.alerts")) == EXPECTED,
    )
    points = receiver.points("webhook.alerts")
    assert {(p.kind, p.unit, p.scope) for p in points} == {("sum", "{alert}", metrics.METER_NAME)}
    assert {frozenset(p.attributes) for p in points} == {frozenset({"source", "status", "outcome"})}


def test_the_alerts_run_is_traced_from_the_webhook_request(
    service: Service, committed: Tokens, posted: dict[str, Any]
) -> None:
    (run_id,) = posted["workflowRunIds"]
    status, run, _ = http("GET", f"{service.base}/api/runs/{run_id}", token=committed.trigger)
    assert status == 200, run
    receiver = service.receiver
    workflow = receiver.wait_for(
        "the alert run's workflow.execute",
        lambda: [s for s in receiver.spans(run["trace_id"]) if s.name == "workflow.execute"],
        timeout=30,
    )[0]
    assert workflow.attributes["workflow.trigger"] == "alert"
    (webhook,) = [s for s in receiver.spans(run["trace_id"]) if s.kind == SERVER]
    assert webhook.name == "POST webhooks/grafana"
    assert workflow.parent_span_id == webhook.span_id
