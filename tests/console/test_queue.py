"""The approvals queue as the console shows it: waits in seconds, buttons that name their request, and who let
a waiting run go on."""

from __future__ import annotations

import re
from datetime import timedelta

from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalRequest
from tests.approvals.conftest import at_gate, node, start
from tests.conftest import finish
from workflows.models import RunStatus

QUEUE = reverse("admin:approvals_pendingapproval_changelist")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_waits_are_in_seconds_under_a_minute(synced, operator):
    req = at_gate(start("scan-approve-notify"))
    ApprovalRequest.objects.filter(pk=req.pk).update(requested_at=timezone.now() - timedelta(seconds=42))
    client = logged_in(operator)
    queue = client.get(QUEUE).content.decode()
    waited = re.search(r'<dd class="waiting" title="[^"]+">(\d+) s \(since', queue)
    assert waited is not None and 42 <= int(waited.group(1)) < 60
    listed = client.get(reverse("admin:approvals_approvalrequest_changelist")).content.decode()
    waited = re.search(r'<td class="field-waiting">(\d+) s</td>', listed)
    assert waited is not None and 42 <= int(waited.group(1)) < 60
    assert "minutes" not in queue and "0\xa0minutes" not in listed


def test_the_decision_buttons_name_the_request_they_decide(synced, operator):
    run = start("scan-approve-notify")
    at_gate(run)
    html = logged_in(operator).get(QUEUE).content.decode()
    subject = f"step &#x27;Send the scan report&#x27; of run {str(run.pk)[:8]} (Scan, approve and notify)"
    assert f'class="approve-button" aria-label="Approve {subject}">Approve</button>' in html
    assert f'class="danger reject-button" aria-label="Reject {subject}">Reject</button>' in html
    assert f'aria-label="Select the approval of {subject}"' in html
    assert f"scan-approve-notify run {str(run.pk)[:8]}</a>" in html  # the run as it is named everywhere


def test_the_transition_back_to_running_names_the_approver_or_the_timeout(make_workflow, operator):
    decided = start(make_workflow("admin-resume", node("gate", required=True)))
    req = at_gate(decided)
    logged_in(operator).post(reverse("admin:approvals_approvalrequest_decide", args=[req.pk]), {"decision": "approve"})
    resumed = decided.transitions.get(from_status=RunStatus.WAITING_APPROVAL, to_status=RunStatus.RUNNING)
    assert (resumed.actor, resumed.reason) == ("olivia", "step 'gate' approved by olivia")

    timed = start(make_workflow("admin-timeout", node("gate", required=True, timeout_action="approve")))
    req = at_gate(timed)
    ApprovalRequest.objects.filter(pk=req.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.expire_requests() == 1
    resumed = timed.transitions.get(from_status=RunStatus.WAITING_APPROVAL, to_status=RunStatus.RUNNING)
    assert (resumed.actor, resumed.reason) == ("timeout", "approval timed out: 'gate' approved by the timeout action")
    assert finish(timed).status == RunStatus.SUCCESS
