"""Operator actions on alert deliveries, one function each, as workflows.actions does for runs: the acting
user as ``acting_user``, the permission checked here (PermissionDenied names what is missing), the audit row
written here, whichever page calls it.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied

from accounts import permissions
from alerts import processing
from alerts.models import AlertDelivery

# The admin's "change" permission on deliveries: what the replay action has always required.
REPLAY = permissions.Operation("replay alert deliveries", ("alerts.change_alertdelivery",), "trigger")


def replay(delivery: AlertDelivery, *, acting_user: Any) -> processing.Result:
    """Processes a stored delivery again through the webhook's own path (processing.replay): the same answers
    and guarantees as when it was received; alerts already notified start nothing. The admin history of the
    delivery records who replayed it and what it answered."""
    problem = permissions.refusal(acting_user, REPLAY)
    if problem:
        raise PermissionDenied(problem)
    result = processing.replay(delivery)
    detail = result.body.get("detail", "")
    runs = result.body.get("workflowRunIds") or []
    outcome = f"started run(s) {', '.join(runs)}" if runs else (detail or "no new alert")
    LogEntry.objects.log_actions(
        acting_user.pk, [delivery], CHANGE, change_message=f"Replayed: {result.status} {outcome}", single_object=True
    )
    return result
