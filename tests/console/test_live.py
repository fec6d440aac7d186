"""Live refreshes (X-Console-Live): what they answer, and that each costs the same queries whatever it shows."""

from __future__ import annotations

import re

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from approvals import services
from approvals.models import ApprovalRequest
from tests.approvals.conftest import at_gate, node, start
from workflows.models import RunStatus, RunTransition, StepStatus, WorkflowRun

LIVE = {"X-Console-Live": "1"}
LIST = reverse("admin:workflows_workflowrun_changelist")
QUEUE = reverse("admin:approvals_pendingapproval_changelist")


def run_url(run: WorkflowRun) -> str:
    return reverse("admin:workflows_workflowrun_change", args=[run.pk])


def queries(client, url: str, **kwargs) -> tuple[int, str]:
    client.get(url, **kwargs)  # sessions, content types and permissions cached as in a page left open
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, **kwargs)
    assert response.status_code == 200
    return len(captured.captured_queries), response.content.decode()


def test_a_live_refresh_of_the_run_page_answers_its_regions_and_whether_it_is_still_open(operator_client, make_run):
    running = make_run(status=RunStatus.RUNNING, step_statuses={"doomed": StepStatus.RUNNING})
    _, body = queries(operator_client, run_url(running), headers=LIVE)
    assert body.startswith('<div data-live-state="open">')
    regions = re.findall(r'id="([\w-]+)" data-live-region', body)
    assert regions == [
        "run-facts",
        "run-actions",
        "run-error",
        "run-dag",
        "run-timeline",
        "run-summary",
        "run-steps",
        "run-attempts",
        "run-approvals",
        "run-transitions",
    ]
    assert "<html" not in body and "run-context" not in body  # only what changes
    done = make_run(status=RunStatus.SUCCESS)
    _, body = queries(operator_client, run_url(done), headers=LIVE)
    assert body.startswith('<div data-live-state="done">')
    page = operator_client.get(run_url(done)).content.decode()
    assert 'data-live="run" data-live-state="done"' in page and "workflows/console.js" in page


def test_the_run_page_costs_the_same_queries_for_two_steps_or_forty(operator_client, make_run):
    small = make_run(status=RunStatus.FAILED, step_statuses={"doomed": StepStatus.FAILED})
    large = make_run("chain-40", status=RunStatus.FAILED, step_statuses={"s40": StepStatus.FAILED})
    for run in (small, large):  # a retry round and a re-run each, so every part of the page has rows
        RunTransition.objects.create(run=run, from_status=RunStatus.FAILED, to_status=RunStatus.RUNNING, actor="x")
        rerun = make_run(status=RunStatus.SUCCESS)
        rerun.rerun_of = run
        rerun.save(update_fields=["rerun_of"])
    few, _ = queries(operator_client, run_url(small), headers=LIVE)
    many, body = queries(operator_client, run_url(large), headers=LIVE)
    assert body.count('class="dag-node') == 40
    assert few == many
    page, _ = queries(operator_client, run_url(large))
    assert page == many  # the refresh reads what the page reads, no more


def test_the_run_list_refresh_costs_the_same_queries_for_one_run_or_a_full_page(operator_client, make_run):
    make_run(status=RunStatus.RUNNING, step_statuses={"doomed": StepStatus.RUNNING})
    few, body = queries(operator_client, LIST, headers=LIVE)
    assert body.startswith('<div data-live-state="open">') and 'id="result_list"' in body
    assert "<html" not in body
    for _ in range(55):
        make_run(status=RunStatus.SUCCESS)
    many, body = queries(operator_client, LIST, headers=LIVE)
    assert body.count("data-run=") == 50
    assert few == many
    page, _ = queries(operator_client, LIST)
    assert page == many


def test_the_run_list_is_done_when_nothing_it_shows_is_open(operator_client, make_run):
    make_run(status=RunStatus.SUCCESS)
    _, body = queries(operator_client, LIST, headers=LIVE)
    assert body.startswith('<div data-live-state="done">')
    page = operator_client.get(LIST).content.decode()
    assert 'data-live="list" data-live-state="done"' in page


def test_the_queue_refresh_costs_the_same_queries_for_one_request_or_five(
    make_workflow, operator_client, run_operator, second_operator
):
    workflow = make_workflow(
        "live-queue",
        node("scan"),
        node("gate", depends_on=["scan"], inputs={"seen": "{{ steps.scan.output.step }}"}, groups=["operators"]),
        node("quorum", depends_on=["scan"], required_approvals=2),
    )
    at_gate(start(workflow), "gate")
    few, body = queries(operator_client, QUEUE, headers=LIVE)
    assert body.startswith('<div data-live-state="open">') and body.count('class="approval-card"') == 2
    assert "<html" not in body
    for _ in range(4):
        run = start(workflow)
        at_gate(run, "gate")
        quorum = ApprovalRequest.objects.get(run=run, node_key="quorum")
        services.decide(quorum, acting_user=second_operator, decision="approve", channel="admin")
    many, body = queries(operator_client, QUEUE, headers=LIVE)
    assert body.count('class="approval-card"') == 10
    assert "&quot;seen&quot;: &quot;scan&quot;" in body  # inputs rendered from the outputs read in bulk
    assert "otto approved via admin" in body
    assert few == many
