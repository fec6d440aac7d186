"""A resolved notification says so, links to the firing alert, and ends what the firing alert left waiting."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from approvals.models import ApprovalRequest
from observability.models import AlertEvent
from tests.alerts.conftest import fixture, post
from tests.conftest import work
from workflows.models import RunStatus, WorkflowRun

pytestmark = pytest.mark.django_db


def with_workflow(name: str, workflow: str) -> dict[str, Any]:
    payload = copy.deepcopy(fixture(name))
    payload["alerts"] = payload["alerts"][:1]
    payload["alerts"][0]["labels"]["workflow"] = workflow
    payload["commonLabels"]["workflow"] = workflow
    return payload


def test_the_resolved_run_links_to_the_firing_alert_and_its_run(check_webhook: Any) -> None:
    firing = check_webhook("grafana_firing", {"status": "firing"})
    resolved = check_webhook("grafana_resolved", {"status": "resolved", "resolved": True, "severity": "critical"})
    assert resolved.context["resolves_run_ids"] == [str(firing.id)]
    event = AlertEvent.objects.get(fingerprint="6a1c3f0e9b2d47aa", status="resolved")
    assert event.firing_event == AlertEvent.objects.get(fingerprint="6a1c3f0e9b2d47aa", status="firing")
    assert list(event.firing_event.runs.all()) == [firing]
    assert resolved.context["alerts"][0]["endsAt"] == "2026-11-28T09:31:30Z"


def test_a_resolved_alert_never_seen_firing_still_notifies(check_webhook: Any) -> None:
    resolved = check_webhook("grafana_resolved", {"status": "resolved", "resolves_run_ids": []})
    assert AlertEvent.objects.get(runs=resolved).firing_event is None


def test_resolving_cancels_the_firing_runs_that_wait_for_approval(synced: None, settings: Any) -> None:
    settings.ALERT_WORKFLOW_ALLOWLIST = ["scan-approve-notify"]
    body = post(with_workflow("grafana_firing", "scan-approve-notify")).json()
    firing = WorkflowRun.objects.get(id=body["workflowRunIds"][0])
    assert firing.workflow.slug == "scan-approve-notify"

    def waiting() -> bool:
        firing.refresh_from_db()
        return firing.status == RunStatus.WAITING_APPROVAL

    work(waiting)
    request = ApprovalRequest.objects.get(run=firing)
    assert request.status == ApprovalRequest.Status.PENDING

    resolved_body = post(with_workflow("grafana_resolved", "scan-approve-notify")).json()
    assert len(resolved_body["workflowRunIds"]) == 1
    firing.refresh_from_db()
    request.refresh_from_db()
    assert firing.status == RunStatus.CANCELLED
    assert firing.error == "alert resolved"
    last = firing.transitions.last()
    assert last is not None and last.actor == "alert-webhook"
    assert request.status == ApprovalRequest.Status.CANCELLED


def test_resolving_leaves_finished_firing_runs_alone(check_webhook: Any) -> None:
    from tests.conftest import finish

    firing = finish(check_webhook("grafana_firing", {}))
    assert firing.status == RunStatus.SUCCESS
    check_webhook("grafana_resolved", {"resolves_run_ids": [str(firing.id)]})
    firing.refresh_from_db()
    assert firing.status == RunStatus.SUCCESS
