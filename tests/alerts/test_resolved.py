"""A resolved notification says so, links to the firing alert, and expires what the firing alert left waiting."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.models import AlertEvent
from approvals.models import ApprovalRequest
from tests.alerts.conftest import fixture, post
from tests.conftest import finish, work
from workflows.loader import sync
from workflows.models import RunStatus, StepStatus, WorkflowRun

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


def waiting_run(workflow: str) -> tuple[WorkflowRun, ApprovalRequest]:
    """POSTs a firing alert that starts ``workflow`` and works until its run waits for an approval."""
    body = post(with_workflow("grafana_firing", workflow)).json()
    firing = WorkflowRun.objects.get(id=body["workflowRunIds"][0])
    assert firing.workflow.slug == workflow

    def waiting() -> bool:
        firing.refresh_from_db()
        return firing.status == RunStatus.WAITING_APPROVAL

    work(waiting)
    request = ApprovalRequest.objects.get(run=firing)
    assert request.status == ApprovalRequest.Status.PENDING
    return firing, request


def test_resolving_expires_the_pending_approvals_of_the_firing_runs(
    synced: None,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.ALERT_WORKFLOW_ALLOWLIST = ["scan-approve-notify"]
    firing, request = waiting_run("scan-approve-notify")

    with caplog.at_level("INFO"), django_capture_on_commit_callbacks(execute=True):
        resolved_body = post(with_workflow("grafana_resolved", "scan-approve-notify")).json()
    assert len(resolved_body["workflowRunIds"]) == 1
    firing.refresh_from_db()
    request.refresh_from_db()
    assert request.status == ApprovalRequest.Status.EXPIRED
    assert request.decision_comment == "alert resolved; timeout action: reject"
    assert request.channel == "timeout" and request.decided_at is not None and request.decided_by is None
    assert request.wait_seconds is not None and request.wait_seconds >= 0
    # The gate's timeout action (reject) applies to the run, as when its time runs out.
    assert firing.status == RunStatus.REJECTED
    assert firing.error == "alert resolved: the approval of step 'notify' expired undecided"
    last = firing.transitions.last()
    assert last is not None and last.actor == "alert-webhook" and last.to_status == RunStatus.REJECTED
    assert firing.steps.get(key="notify").status == StepStatus.CANCELLED
    # Reported like any expiry: the outcome event (and with it the approval.wait span) says "expired".
    outcomes = [r for r in caplog.records if getattr(r, "event", "") == "approval.outcome"]
    assert [(r.decision, r.channel, r.approval_id) for r in outcomes] == [  # type: ignore[attr-defined]
        ("expired", "timeout", request.pk)
    ]
    expired = [r for r in caplog.records if getattr(r, "event", "") == "approval.expired"]
    assert [r.reason for r in expired] == ["alert resolved"]  # type: ignore[attr-defined]


def test_a_gate_that_approves_on_timeout_lets_the_firing_run_finish_when_the_alert_resolves(
    synced: None, settings: Any, tmp_path: Path
) -> None:
    definition = {
        "workflow": {
            "slug": "gate-approves-on-timeout",
            "name": "gate-approves-on-timeout",
            "nodes": [
                {
                    "key": "notify",
                    "agent": "log-notifier",
                    "inputs": {"message": "{{ context.summary }}"},
                    "approval": {"required": True, "timeout_seconds": 3600, "timeout_action": "approve"},
                }
            ],
        }
    }
    path = tmp_path / "gate-approves-on-timeout.yaml"
    path.write_text(yaml.safe_dump(definition))
    sync(path)
    settings.ALERT_WORKFLOW_ALLOWLIST = ["gate-approves-on-timeout"]
    firing, request = waiting_run("gate-approves-on-timeout")

    post(with_workflow("grafana_resolved", "gate-approves-on-timeout"))
    request.refresh_from_db()
    assert request.status == ApprovalRequest.Status.EXPIRED
    assert request.decision_comment == "alert resolved; timeout action: approve"
    firing = finish(firing)
    assert firing.status == RunStatus.SUCCESS
    output = firing.steps.get(key="notify").output
    assert output is not None and output["delivered"] is True


def test_resolving_leaves_finished_firing_runs_alone(check_webhook: Any) -> None:
    firing = finish(check_webhook("grafana_firing", {}))
    assert firing.status == RunStatus.SUCCESS
    check_webhook("grafana_resolved", {"resolves_run_ids": [str(firing.id)]})
    firing.refresh_from_db()
    assert firing.status == RunStatus.SUCCESS
