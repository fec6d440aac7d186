"""The runner's hand-written UPDATEs store values exactly as the ORM does, and match only what they should."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.workflows.helpers import define
from workflows import sql
from workflows.models import RunStep, StepStatus
from workflows.services import trigger_workflow

AGENTS = [{"slug": "s-echo", "type": "echo"}]


@pytest.fixture
def steps(tmp_path: Path) -> list[RunStep]:
    wf = define(tmp_path, "sqlwf", [{"key": "a", "agent": "s-echo"}, {"key": "b", "agent": "s-echo"}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    return list(run.steps.order_by("position"))


@pytest.mark.django_db
def test_update_writes_json_datetimes_and_nulls_like_the_orm(steps: list[RunStep]) -> None:
    a, b = steps
    when = timezone.now() - timedelta(minutes=5)
    output = {"hosts": ["db01", "db02"], "nested": {"n": 1, "ok": True, "none": None}, "text": 'it\'s "quoted"'}
    assert sql.update(RunStep, {"id": a.id}, status=StepStatus.SUCCESS, output=output, finished_at=when) == 1
    a.refresh_from_db()
    assert (a.status, a.output, a.finished_at) == (StepStatus.SUCCESS, output, when)
    assert RunStep.objects.filter(output__nested__n=1).count() == 1  # stored as JSON, not as a string
    assert sql.update(RunStep, {"id": a.id}, output=None, lease_expires_at=None) == 1
    assert RunStep.objects.filter(id=a.id, output__isnull=True).exists()  # SQL NULL, as the ORM stores None
    b.refresh_from_db()
    assert b.output is None and b.status == StepStatus.READY  # the other step was left alone


@pytest.mark.django_db
def test_update_matches_only_rows_that_meet_every_condition(steps: list[RunStep]) -> None:
    a, _ = steps
    assert sql.update(RunStep, {"id": a.id, "status": StepStatus.RUNNING}, status=StepStatus.SUCCESS) == 0
    assert sql.update(RunStep, {"id": a.id, "status": StepStatus.READY, "worker_id": "w"}, attempts=5) == 0
    assert sql.update(RunStep, {"run": a.run_id, "lease_expires_at": None}, worker_id="w") == 2  # IS NULL
    assert sql.update(RunStep, {"run": a.run_id, "worker_id": "w", "finished_at": None}, attempts=3) == 2
    assert set(RunStep.objects.values_list("worker_id", "attempts")) == {("w", 3)}


@pytest.mark.django_db
def test_step_rows_lists_every_step_of_the_run(steps: list[RunStep]) -> None:
    a, b = steps
    rows = sorted(RunStep.rows_of(a.run_id))
    assert rows == [(a.id, "a", a.status, 0, 0), (b.id, "b", b.status, 0, 0)]
