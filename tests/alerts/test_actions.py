"""Replaying a delivery is an operator action: the permission checked in the action itself, who did it kept in
the delivery's history, whichever page asked."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.exceptions import PermissionDenied

from alerts import actions
from alerts.models import AlertDelivery
from tests.alerts.conftest import fixture, post
from workflows.models import Workflow, WorkflowRun

pytestmark = pytest.mark.django_db


def _failed_delivery() -> AlertDelivery:
    Workflow.objects.filter(slug="alert-notification").update(enabled=False)
    assert post(fixture("alertmanager_firing")).status_code == 503
    Workflow.objects.filter(slug="alert-notification").update(enabled=True)
    return AlertDelivery.objects.get()


def test_a_user_without_the_permission_is_refused_and_nothing_runs(synced: None) -> None:
    delivery = _failed_delivery()
    viewer = User.objects.create_user("victor", password="viewer-pass-1", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_alertdelivery"))
    with pytest.raises(PermissionDenied, match=r"victor lacks the permission to replay alert deliveries"):
        actions.replay(delivery, acting_user=viewer)
    assert WorkflowRun.objects.count() == 0
    assert AlertDelivery.objects.get().attempts == delivery.attempts
    assert not LogEntry.objects.exists()


def test_a_replay_starts_the_run_and_the_history_says_who_did_it(synced: None) -> None:
    delivery = _failed_delivery()
    operator = User.objects.create_user("olivia", password="operator-pass-1", is_staff=True)
    operator.user_permissions.add(Permission.objects.get(codename="change_alertdelivery"))
    result = actions.replay(delivery, acting_user=operator)
    assert result.status == 200
    run = WorkflowRun.objects.get()
    assert result.body["workflowRunIds"] == [str(run.id)]
    entry = LogEntry.objects.get()
    assert (entry.user, entry.object_id) == (operator, str(delivery.pk))
    assert entry.get_change_message() == f"Replayed: 200 started run(s) {run.id}"
