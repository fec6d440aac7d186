"""Operator actions (workflows.actions) check the permission themselves and leave the actor on the audit row."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied

from tests.workflows.helpers import define
from workflows import actions
from workflows.models import RunStatus, RunTransition, TriggerSource, WorkflowRun

AGENTS = [{"slug": "act-echo", "type": "echo"}]


@pytest.fixture
def run(tmp_path: Path, operator: User) -> WorkflowRun:
    wf = define(tmp_path, "acts", [{"key": "a", "agent": "act-echo"}], AGENTS)
    run, created = actions.trigger(wf, acting_user=operator, context={"x": 1}, channel="admin")
    assert created
    return run


@pytest.mark.django_db
def test_a_trigger_from_the_console_names_its_user(run: WorkflowRun, operator: User) -> None:
    assert (run.trigger, run.trigger_detail, run.triggered_by) == (TriggerSource.ADMIN, "admin: olivia", operator)
    assert RunTransition.objects.get(run=run).actor == "olivia"


@pytest.mark.django_db
def test_a_viewer_may_not_cancel_retry_rerun_or_trigger(run: WorkflowRun, viewer: User) -> None:
    for act in (
        lambda: actions.cancel(run, acting_user=viewer, channel="api"),
        lambda: actions.retry_failed_steps(run, acting_user=viewer),
        lambda: actions.rerun(run, acting_user=viewer),
        lambda: actions.trigger(run.workflow, acting_user=viewer, context={}, channel="api"),
    ):
        with pytest.raises(PermissionDenied, match="lacks the permission"):
            act()
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING
    assert WorkflowRun.objects.count() == 1 and RunTransition.objects.filter(run=run).count() == 1


@pytest.mark.django_db
def test_cancelling_writes_the_actor_and_the_channel_on_the_audit_row(run: WorkflowRun, operator: User) -> None:
    actions.cancel(run, acting_user=operator, channel="api")
    last = RunTransition.objects.filter(run=run).last()
    assert last is not None
    assert (last.to_status, last.actor, last.reason) == (RunStatus.CANCELLED, "olivia", "cancelled by olivia via api")
