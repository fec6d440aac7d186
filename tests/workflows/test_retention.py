"""Retention: old queue rows, alert records and (when asked) finished runs go, in batches; nothing else does."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.db.models import Model
from django.tasks import TaskResultStatus
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult, get_date_max

from agents.models import AgentRun
from alerts.models import AlertDelivery, AlertEvent
from approvals.models import ApprovalDecision, ApprovalRequest
from tests.conftest import finish
from tests.workflows.helpers import define
from workflows import retention, runner
from workflows.models import RunStatus, RunStep, RunTransition, TriggerSource, WorkflowRun
from workflows.services import trigger_workflow

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
AGENTS = [{"slug": "r-echo", "type": "echo"}]


@pytest.fixture(autouse=True)
def retention_settings(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    settings.TASK_RESULT_RETENTION_HOURS = 72
    settings.ALERT_RETENTION_DAYS = 30
    settings.RUN_RETENTION_DAYS = 0
    settings.RETENTION_INTERVAL_SECONDS = 300
    monkeypatch.setattr(retention, "_last_pruned", None)
    return settings


def ago(**delta: float) -> datetime:
    return timezone.now() - timedelta(**delta)


def task_row(status: str, *, started: datetime | None = None, finished: datetime | None = None) -> DBTaskResult:
    row = DBTaskResult.objects.create(
        status=status,
        args_kwargs={"args": [1], "kwargs": {}},
        task_path="workflows.tasks.execute_step",
        backend_name="default",
        run_after=get_date_max(),
        started_at=started,
        finished_at=finished,
    )
    DBTaskResult.objects.filter(pk=row.pk).update(enqueued_at=started or finished or ago(days=30))
    return row


def delivery(received: datetime) -> AlertDelivery:
    return AlertDelivery.objects.create(received_at=received, source="grafana", outcome="processed", body="{}")


def event(seen: datetime, *, status: str = "firing", fingerprint: str = "", **fields: Any) -> AlertEvent:
    values = {"first_seen_at": seen, "last_seen_at": seen, "notified_at": seen, **fields}
    return AlertEvent.objects.create(
        fingerprint=fingerprint or f"fp-{AlertEvent.objects.count()}",
        status=status,
        starts_at=seen - timedelta(minutes=5),
        alertname="HighLatency",
        **values,
    )


def remaining(model: type[Model], *rows: Any) -> set[Any]:
    """Which of ``rows`` are still in the database."""
    return (
        set(model._default_manager.filter(pk__in=[r.pk for r in rows]).values_list("pk", flat=True)) if rows else set()
    )


def finished_run(tmp_path: Path, *, days_ago: float, **trigger: Any) -> WorkflowRun:
    wf = define(
        tmp_path,
        "retained",
        [{"key": "a", "agent": "r-echo"}, {"key": "b", "agent": "r-echo", "depends_on": ["a"]}],
        AGENTS,
    )
    run = finish(trigger_workflow(wf, context={}, **trigger)[0])
    assert run.status == RunStatus.SUCCESS
    WorkflowRun.objects.filter(pk=run.pk).update(finished_at=ago(days=days_ago))
    return run


def test_finished_queue_rows_past_retention_go_and_recent_or_ready_ones_stay(caplog: pytest.LogCaptureFixture) -> None:
    old_ok = task_row(TaskResultStatus.SUCCESSFUL, started=ago(hours=74), finished=ago(hours=73))
    old_failed = task_row(TaskResultStatus.FAILED, started=ago(hours=80), finished=ago(hours=80))
    recent = task_row(TaskResultStatus.SUCCESSFUL, started=ago(hours=72), finished=ago(hours=71))
    ready = task_row(TaskResultStatus.READY)  # queued 30 days ago, never run: still work to do
    running = task_row(TaskResultStatus.RUNNING, started=ago(hours=1))

    with caplog.at_level(logging.INFO, logger="workflows.retention"):
        counts = retention.prune()

    assert counts == {"task_results": 2, "alert_events": 0, "alert_deliveries": 0, "runs": 0}
    assert remaining(DBTaskResult, old_ok, old_failed, recent, ready, running) == {recent.pk, ready.pk, running.pk}
    [record] = [r for r in caplog.records if r.name == "workflows.retention"]
    assert record.levelno == logging.INFO
    assert record.event == "retention.pruned"  # type: ignore[attr-defined]
    assert record.task_results == 2  # type: ignore[attr-defined]


def test_a_running_queue_row_left_by_a_dead_worker_goes_once_past_retention() -> None:
    orphan = task_row(TaskResultStatus.RUNNING, started=ago(hours=73))
    assert retention.prune()["task_results"] == 1
    assert not DBTaskResult.objects.filter(pk=orphan.pk).exists()


def test_zero_keeps_every_kind_forever(settings: Any) -> None:
    settings.TASK_RESULT_RETENTION_HOURS = 0
    settings.ALERT_RETENTION_DAYS = 0
    row = task_row(TaskResultStatus.SUCCESSFUL, finished=ago(days=400))
    old = event(ago(days=400), delivery=delivery(ago(days=400)))

    assert retention.prune() == dict.fromkeys(retention.KINDS, 0)
    assert remaining(DBTaskResult, row) == {row.pk}
    assert remaining(AlertEvent, old) == {old.pk}
    assert AlertDelivery.objects.count() == 1


def test_alert_records_past_retention_go_and_recent_ones_stay() -> None:
    old_delivery, recent_delivery = delivery(ago(days=31)), delivery(ago(days=29))
    old_event = event(ago(days=31), delivery=old_delivery)
    recent_event = event(ago(days=29), delivery=recent_delivery)
    # Seen 40 days ago first, but again yesterday: it is the last sighting that counts.
    repeating = event(ago(days=40), last_seen_at=ago(days=1))

    counts = retention.prune()

    assert (counts["alert_events"], counts["alert_deliveries"]) == (1, 1)
    assert remaining(AlertEvent, old_event, recent_event, repeating) == {recent_event.pk, repeating.pk}
    assert remaining(AlertDelivery, old_delivery, recent_delivery) == {recent_delivery.pk}


def test_a_kept_resolution_keeps_the_firing_event_it_links_to() -> None:
    firing = event(ago(days=45), fingerprint="fp-a")
    resolved = event(ago(days=2), status="resolved", fingerprint="fp-a", firing_event=firing)
    old_firing = event(ago(days=50), fingerprint="fp-b")
    old_resolved = event(ago(days=40), status="resolved", fingerprint="fp-b", firing_event=old_firing)

    assert retention.prune()["alert_events"] == 2

    assert remaining(AlertEvent, firing, resolved, old_firing, old_resolved) == {firing.pk, resolved.pk}
    resolved.refresh_from_db()
    assert resolved.firing_event_id == firing.pk


def test_a_delivery_stays_while_a_kept_event_points_to_it() -> None:
    carrier = delivery(ago(days=45))
    kept = event(ago(days=1), delivery=carrier)
    assert retention.prune()["alert_deliveries"] == 0
    kept.refresh_from_db()
    assert kept.delivery_id == carrier.pk


def test_alert_records_of_an_active_run_stay_and_a_finished_run_outlives_them(tmp_path: Path) -> None:
    wf = define(tmp_path, "alerted", [{"key": "a", "agent": "r-echo"}], AGENTS)
    active, _ = trigger_workflow(wf, context={}, trigger=TriggerSource.ALERT, trigger_detail="grafana firing: Busy")
    done, _ = trigger_workflow(wf, context={}, trigger=TriggerSource.ALERT, trigger_detail="grafana firing: Done")
    WorkflowRun.objects.filter(pk=done.pk).update(status=RunStatus.SUCCESS, finished_at=ago(days=40))
    active_delivery, done_delivery = delivery(ago(days=40)), delivery(ago(days=40))
    active_event, done_event = event(ago(days=40)), event(ago(days=40))
    for record in (active_delivery, active_event):
        record.runs.add(active)
    for record in (done_delivery, done_event):
        record.runs.add(done)

    counts = retention.prune()

    assert (counts["alert_events"], counts["alert_deliveries"], counts["runs"]) == (1, 1, 0)
    assert remaining(AlertEvent, active_event, done_event) == {active_event.pk}
    assert remaining(AlertDelivery, active_delivery, done_delivery) == {active_delivery.pk}
    done.refresh_from_db()  # the run is still there, still saying what started it
    assert done.trigger_detail == "grafana firing: Done"
    assert not done.alert_events.exists() and not done.alert_deliveries.exists()
    assert list(active.alert_events.all()) == [active_event]


def test_runs_are_kept_forever_by_default(tmp_path: Path) -> None:
    run = finished_run(tmp_path, days_ago=3650)
    assert retention.prune()["runs"] == 0
    assert WorkflowRun.objects.filter(pk=run.pk).exists()


def test_old_finished_runs_go_with_everything_they_own(tmp_path: Path, settings: Any, operator: User) -> None:
    settings.RUN_RETENTION_DAYS = 7
    old = finished_run(tmp_path, days_ago=8)
    recent = finished_run(tmp_path, days_ago=6)
    rerun = finished_run(tmp_path, days_ago=0, trigger=TriggerSource.RERUN, rerun_of=old)
    request = ApprovalRequest.objects.create(run=old, step=old.steps.get(key="a"), node_key="a", status="APPROVED")
    ApprovalDecision.objects.create(request=request, user=operator, decision="approve", channel="api", wait_seconds=1)
    linked = event(ago(days=1))
    linked.runs.add(old)
    # Its finished_at is old and its status is not terminal (a retry is under way): the status guards it.
    retried = finished_run(tmp_path, days_ago=30)
    WorkflowRun.objects.filter(pk=retried.pk).update(status=RunStatus.RUNNING)
    steps_of_old = list(old.steps.values_list("pk", flat=True))
    assert old.attempts.count() == 2 and old.transitions.count() == 3

    assert retention.prune()["runs"] == 1

    assert remaining(WorkflowRun, old, recent, rerun, retried) == {recent.pk, rerun.pk, retried.pk}
    assert not RunStep.objects.filter(pk__in=steps_of_old).exists()
    assert not AgentRun.objects.filter(run_id=old.pk).exists()
    assert not RunTransition.objects.filter(run_id=old.pk).exists()
    assert not ApprovalRequest.objects.filter(run_id=old.pk).exists()
    assert not ApprovalDecision.objects.filter(user=operator).exists()
    assert User.objects.filter(pk=operator.pk).exists()
    rerun.refresh_from_db()
    assert rerun.rerun_of_id is None
    assert remaining(AlertEvent, linked) == {linked.pk}
    assert recent.steps.count() == 2 and recent.attempts.count() == 2 and recent.transitions.count() == 3


def test_each_delete_takes_at_most_a_batch_and_the_cap_bounds_one_call() -> None:
    rows = [task_row(TaskResultStatus.SUCCESSFUL, finished=ago(days=4)) for _ in range(5)]

    assert retention.prune(batch=2, max_batches=2)["task_results"] == 4
    assert len(remaining(DBTaskResult, *rows)) == 1

    more = [task_row(TaskResultStatus.FAILED, finished=ago(days=4)) for _ in range(4)]
    with CaptureQueriesContext(connection) as queries:
        assert retention.prune(batch=2, max_batches=None)["task_results"] == 5
    table = f'"{DBTaskResult._meta.db_table}"'
    sqls = [q["sql"] for q in queries]
    deletes = [sql for sql in sqls if sql.startswith("DELETE") and sql.split()[2] == table]
    assert [len(re.findall(r"'[0-9a-f]{32}'::uuid", sql)) for sql in deletes] == [2, 2, 1]
    selects = [sql for sql in sqls if sql.startswith("SELECT") and sql.split()[1].startswith(table)]
    assert selects and all(sql.endswith(f"LIMIT 2 FOR UPDATE OF {table} SKIP LOCKED") for sql in selects)
    assert remaining(DBTaskResult, *rows, *more) == set()


def test_a_dry_run_counts_and_deletes_nothing(tmp_path: Path, settings: Any) -> None:
    settings.RUN_RETENTION_DAYS = 7
    row = task_row(TaskResultStatus.SUCCESSFUL, finished=ago(days=4))
    old = event(ago(days=31), delivery=delivery(ago(days=31)))
    run = finished_run(tmp_path, days_ago=8)

    counts = retention.prune(dry_run=True)

    assert counts == {"task_results": 1, "alert_events": 1, "alert_deliveries": 1, "runs": 1}
    assert remaining(DBTaskResult, row) == {row.pk}
    assert remaining(AlertEvent, old) == {old.pk}
    assert AlertDelivery.objects.count() == 1
    assert WorkflowRun.objects.filter(pk=run.pk).exists()


def test_workers_prune_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(retention, "monotonic", lambda: clock[0])
    task_row(TaskResultStatus.SUCCESSFUL, finished=ago(days=4))
    assert retention.prune_if_due()["task_results"] == 1

    task_row(TaskResultStatus.SUCCESSFUL, finished=ago(days=4))
    clock[0] += 299
    assert retention.prune_if_due() == dict.fromkeys(retention.KINDS, 0)
    assert DBTaskResult.objects.count() == 1

    clock[0] += 1
    assert retention.prune_if_due()["task_results"] == 1
    assert DBTaskResult.objects.count() == 0


def test_a_pass_stopped_by_the_cap_leaves_the_next_one_due(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "monotonic", lambda: 1000.0)
    monkeypatch.setattr(retention, "BATCH", 2)
    monkeypatch.setattr(retention, "MAX_BATCHES", 1)
    for _ in range(3):
        task_row(TaskResultStatus.SUCCESSFUL, finished=ago(days=4))

    assert retention.prune_if_due()["task_results"] == 2
    assert retention.prune_if_due()["task_results"] == 1  # same instant: due again, the backlog drains
    assert retention.prune_if_due()["task_results"] == 0


def test_maintenance_reports_what_it_pruned() -> None:
    task_row(TaskResultStatus.SUCCESSFUL, finished=ago(days=4))
    done = runner.maintenance()
    assert done["pruned_task_results"] == 1
    assert {"reaped", "requeued", "expired_approvals", "pruned_alert_events", "pruned_runs"} <= set(done)
    assert runner.maintenance()["pruned_task_results"] == 0  # not due again for RETENTION_INTERVAL_SECONDS


def test_the_prune_command_prints_the_counts() -> None:
    row = task_row(TaskResultStatus.SUCCESSFUL, finished=ago(days=4))
    event(ago(days=31))

    out = StringIO()
    call_command("prune", "--dry-run", stdout=out)
    assert out.getvalue().splitlines() == [
        "task_results: 1",
        "alert_events: 1",
        "alert_deliveries: 0",
        "runs: 0",
        "would delete 2 rows (dry run)",
    ]
    assert remaining(DBTaskResult, row) == {row.pk}

    out = StringIO()
    call_command("prune", "--batch", "1", stdout=out)
    assert "task_results: 1" in out.getvalue().splitlines()
    assert out.getvalue().splitlines()[-1] == "deleted 2 rows"
    assert not DBTaskResult.objects.exists() and not AlertEvent.objects.exists()
