"""A run's pending approvals expire only when every alert that started it has resolved.

When one of two alerts in a group resolves, Alertmanager sends the group with ``status: firing``, one alert
``resolved`` and one still ``firing``: the resolution gets its run (linked to the firing run), but the
approval the firing run waits on stays. Two deliveries that resolve the last two alerts at the same moment,
in two real concurrent transactions, expire it exactly once.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any

import psycopg
import pytest
from django.db import connection, connections

from alerts import processing
from alerts.models import AlertDelivery
from approvals.models import ApprovalRequest
from tests.alerts.conftest import fixture, post
from tests.conftest import work
from workflows.models import RunStatus, WorkflowRun

WORKFLOW = "scan-approve-notify"


def group(*states: tuple[str, str]) -> dict[str, Any]:
    """An Alertmanager group of alerts (fingerprint, status) that start the gated workflow."""
    payload = fixture("alertmanager_firing")
    template = payload["alerts"][0]
    alerts = []
    for fingerprint, status in states:
        alert = copy.deepcopy(template)
        alert["labels"] = {"alertname": f"Disk{fingerprint}", "team": "storage", "workflow": WORKFLOW}
        alert.update(status=status, fingerprint=fingerprint, startsAt="2026-11-28T10:00:00Z")
        if status == "resolved":
            alert["endsAt"] = "2026-11-28T10:05:00Z"
        alerts.append(alert)
    payload.update(
        alerts=alerts,
        status="firing" if any(s == "firing" for _, s in states) else "resolved",
        groupLabels={"team": "storage"},
        commonLabels={"team": "storage", "workflow": WORKFLOW},
        groupKey='{}:{team="storage"}',
    )
    return payload


@pytest.fixture
def waiting(synced: None, settings: Any) -> tuple[WorkflowRun, ApprovalRequest]:
    """Alerts A and B fire in one group; their run waits for its approval."""
    settings.ALERT_WORKFLOW_ALLOWLIST = [WORKFLOW]
    response = post(group(("A", "firing"), ("B", "firing")))
    (run_id,) = response.json()["workflowRunIds"]
    run = WorkflowRun.objects.get(id=run_id)

    def at_gate() -> bool:
        run.refresh_from_db()
        return run.status == RunStatus.WAITING_APPROVAL

    work(at_gate)
    return run, ApprovalRequest.objects.get(run=run, status=ApprovalRequest.Status.PENDING)


def resolution_run(response: Any) -> WorkflowRun:
    assert response.status_code == 200, response.content
    (run_id,) = response.json()["workflowRunIds"]
    return WorkflowRun.objects.get(id=run_id)


@pytest.mark.django_db
def test_one_of_two_alerts_resolving_keeps_the_approval_and_links_the_runs(
    waiting: tuple[WorkflowRun, ApprovalRequest],
) -> None:
    firing, request = waiting
    partial = resolution_run(post(group(("A", "resolved"), ("B", "firing"))))
    assert partial.context["resolves_run_ids"] == [str(firing.id)]
    request.refresh_from_db()
    firing.refresh_from_db()
    assert request.status == ApprovalRequest.Status.PENDING
    assert firing.status == RunStatus.WAITING_APPROVAL

    # Alertmanager repeats the group: nothing new, the approval still stays.
    assert post(group(("A", "resolved"), ("B", "firing"))).json()["workflowRunIds"] == []
    request.refresh_from_db()
    assert request.status == ApprovalRequest.Status.PENDING

    full = resolution_run(post(group(("A", "resolved"), ("B", "resolved"))))
    assert full.context["resolves_run_ids"] == [str(firing.id)]
    request.refresh_from_db()
    firing.refresh_from_db()
    assert request.status == ApprovalRequest.Status.EXPIRED
    assert request.decision_comment == "alert resolved; timeout action: reject"
    assert firing.status == RunStatus.REJECTED


@pytest.mark.django_db
def test_a_group_that_resolves_at_once_expires_at_once(waiting: tuple[WorkflowRun, ApprovalRequest]) -> None:
    _, request = waiting
    resolution_run(post(group(("A", "resolved"), ("B", "resolved"))))
    request.refresh_from_db()
    assert request.status == ApprovalRequest.Status.EXPIRED


@pytest.mark.django_db
def test_a_resolved_alert_the_run_did_not_start_with_changes_nothing(
    waiting: tuple[WorkflowRun, ApprovalRequest],
) -> None:
    _, request = waiting
    resolution_run(post(group(("C", "resolved"))))
    request.refresh_from_db()
    assert request.status == ApprovalRequest.Status.PENDING


def _waiting_for_locks(count: int, timeout: float = 10.0) -> None:
    """Waits until ``count`` sessions of this test database are waiting for a lock."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            row = cursor.fetchone()
            assert row is not None
            if row[0] >= count:
                return
            time.sleep(0.05)
    raise AssertionError(f"fewer than {count} sessions came to wait for the run's lock")


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_two_deliveries_resolving_the_last_two_alerts_at_once_expire_the_approval_once(
    waiting: tuple[WorkflowRun, ApprovalRequest], caplog: pytest.LogCaptureFixture
) -> None:
    firing, request = waiting
    # Another session holds the firing run's row, so both deliveries claim their alert and then queue for it.
    settings = connection.settings_dict
    holder = psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=False,
    )
    holder.execute("SELECT 1 FROM workflows_workflowrun WHERE id = %s FOR UPDATE", [firing.id])
    results: dict[str, int] = {}

    def deliver(fingerprint: str) -> None:
        try:
            body = json.dumps(group((fingerprint, "resolved"))).encode()
            delivery = processing.store(body, {"Content-Type": "application/json"})
            results[fingerprint] = processing.process(delivery).status
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver, args=(f,)) for f in ("A", "B")]
    with caplog.at_level("INFO", logger="observability.alerts"):
        for thread in threads:
            thread.start()
        try:
            _waiting_for_locks(2)
        finally:
            holder.rollback()
            holder.close()
        for thread in threads:
            thread.join(30)
    assert results == {"A": 200, "B": 200}
    request.refresh_from_db()
    firing.refresh_from_db()
    assert request.status == ApprovalRequest.Status.EXPIRED
    assert firing.status == RunStatus.REJECTED
    expired = [r for r in caplog.records if getattr(r, "event", "") == "alert.resolved_expired"]
    kept = [r for r in caplog.records if getattr(r, "event", "") == "alert.partially_resolved"]
    assert len(expired) == 1 and len(kept) == 1  # the first to get the lock saw the other alert still firing
    assert AlertDelivery.objects.filter(outcome=AlertDelivery.Outcome.PROCESSED).count() == 3
