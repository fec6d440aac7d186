"""The Pending approvals queue reads the same fixed number of queries however many cards it shows."""

from __future__ import annotations

from datetime import timedelta
from itertools import cycle

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals.admin import QUEUE_LIMIT
from approvals.models import ApprovalDecision, ApprovalRequest
from tests.approvals.conftest import node, start
from workflows.models import RunStatus, RunStep, StepStatus, WorkflowRun

QUEUE = reverse("admin:approvals_pendingapproval_changelist")
# The session, its user, the user's permissions (one query for the user's own, one for its groups'), the user's
# groups (for the approver lists), the cards with their runs, who triggered them and how many wait in all, the
# decisions with their users, and the upstream outputs of all the runs.
QUERIES = 8


@pytest.fixture
def queue(make_workflow, operator, second_operator):
    """Fills the queue: runs of three gated workflows (approver groups, an approver list, a quorum of two),
    triggered by different people or by the API, with upstream outputs and, for some, an approval already."""
    workflows = cycle(
        [
            make_workflow("q-groups", node("scan"), node("gate", depends_on=["scan"], groups=["operators"])),
            make_workflow(
                "q-users",
                node("scan"),
                node(
                    "gate",
                    depends_on=["scan"],
                    users=["olivia", "otto"],
                    inputs={"found": "{{ steps.scan.output.step }}", "target": "{{ context.target }}"},
                ),
            ),
            make_workflow("q-quorum", node("gate", required_approvals=2, timeout_seconds=3600)),
        ]
    )
    triggerers = cycle([None, operator, second_operator])

    def fill(count: int) -> None:
        for i in range(count):
            run = start(next(workflows), user=next(triggerers), context={"target": f"web-{i}"})
            steps = {step.key: step for step in run.steps.all()}
            if "scan" in steps:
                RunStep.objects.filter(pk=steps["scan"].pk).update(status=StepStatus.SUCCESS, output={"step": i})
            req = ApprovalRequest.objects.filter(run=run, node_key="gate").first()
            if req is None:  # a gate behind another step: bring the run to it as the runner would
                WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.WAITING_APPROVAL)
                RunStep.objects.filter(pk=steps["gate"].pk).update(status=StepStatus.WAITING_APPROVAL)
                spec = run.node("gate")["approval"]
                req = ApprovalRequest.objects.create(
                    run=run,
                    step=steps["gate"],
                    node_key="gate",
                    required_approvals=spec["required_approvals"],
                    approver_groups=spec["groups"],
                    approver_users=spec["users"],
                )
            ApprovalRequest.objects.filter(pk=req.pk).update(requested_at=timezone.now() - timedelta(seconds=count - i))
            if req.required_approvals > 1 and i % 2:
                ApprovalDecision.objects.create(
                    request=req, user=second_operator, decision="approve", channel="api", wait_seconds=1.0
                )

    return fill


def queries_for(user: User, *, live: bool = False) -> tuple[int, str]:
    client = Client()
    client.force_login(user)
    headers = {"X-Console-Live": "1"} if live else {}
    with CaptureQueriesContext(connection) as captured:
        response = client.get(QUEUE, headers=headers)
    assert response.status_code == 200
    return len(captured.captured_queries), response.content.decode()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("live", [False, True], ids=["page", "live-refresh"])
def test_the_queue_costs_the_same_queries_for_one_ten_and_two_hundred_cards(queue, operator, live):
    counts = {}
    for total in (1, 10, QUEUE_LIMIT):
        queue(total - ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).count())
        counts[total], html = queries_for(operator, live=live)
        assert html.count('class="approval-card"') == total
        assert html.count('class="approve-button"') > 0
    assert counts == {1: QUERIES, 10: QUERIES, QUEUE_LIMIT: QUERIES}


@pytest.mark.timeout(120)
def test_a_full_queue_says_how_many_wait_beyond_the_cards_it_shows(queue, operator):
    queue(QUEUE_LIMIT + 3)
    count, html = queries_for(operator)
    assert count == QUERIES
    assert html.count('class="approval-card"') == QUEUE_LIMIT
    assert f"{QUEUE_LIMIT + 3} requests waiting, oldest first (showing the first {QUEUE_LIMIT})." in html


@pytest.mark.timeout(120)
def test_the_cards_say_what_each_step_will_do(queue, operator, second_operator):
    queue(12)
    _, html = queries_for(operator)
    # Inputs rendered from the upstream outputs read in the one query, per run.
    assert "&quot;found&quot;: 4," in html and "&quot;target&quot;: &quot;web-4&quot;" in html
    assert "1 of 2" in html and "0 of 2" in html  # the quorum with a decision already recorded
    assert "otto approved via api" in html
    # Runs olivia triggered show no Approve button; the others do.
    assert html.count('class="approve-button"') == 8


@pytest.mark.timeout(120)
def test_the_bulk_approve_confirmation_costs_the_same_queries_for_ten_and_two_hundred(queue, operator):
    client = Client()
    client.force_login(operator)
    counts = {}
    for total in (10, QUEUE_LIMIT):
        queue(total - ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).count())
        ids = list(ApprovalRequest.objects.values_list("id", flat=True))
        with CaptureQueriesContext(connection) as captured:
            response = client.post(reverse("admin:approvals_pendingapproval_bulk_approve"), {"ids": ids})
        assert response.status_code == 200 and "Approve" in response.content.decode()
        counts[total] = len(captured.captured_queries)
    assert counts[10] == counts[QUEUE_LIMIT]
    assert ApprovalDecision.objects.filter(user=operator).count() == 0  # only asked, nothing recorded
