"""The Pending approvals page, the detail page, decision buttons, bulk approve, and who sees what."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from approvals.models import ApprovalRequest
from tests.approvals.conftest import at_gate, node, start
from tests.conftest import finish
from workflows.models import RunStatus

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = "/admin/approvals/pendingapproval/"


def logged_in(user, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def decide_url(req: ApprovalRequest) -> str:
    return reverse("admin:approvals_approvalrequest_decide", args=[req.pk])


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_the_queue_shows_what_the_step_will_do(synced, operator):
    run = start("scan-approve-notify", context={"target": "db-7"})
    req = at_gate(run)
    page = logged_in(operator).get(QUEUE)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Pending approvals" in html
    assert f'id="approval-{req.pk}"' in html
    assert "Scan, approve and notify — Send the scan report" in html
    assert reverse("admin:workflows_workflowrun_change", args=[run.pk]) in html
    assert "<code>notify</code>" in html
    assert "Waiting for" in html
    assert "&quot;target&quot;: &quot;db-7&quot;" in html  # context summary
    assert "Scan of db-7 found" in html  # the rendered inputs of the notify step
    assert "&quot;summarise&quot;" in html and "&quot;scan&quot;" in html  # upstream outputs
    assert 'value="approve"' in html and 'value="reject"' in html
    assert "Approve selected" in html


def test_the_admin_index_links_to_the_queue(synced, operator):
    html = logged_in(operator).get("/admin/").content.decode()
    assert QUEUE in html and "Pending approvals" in html


def test_a_missing_reference_shows_the_template_error(make_workflow, operator):
    workflow = make_workflow("bad-ref", node("gate", required=True, inputs={"host": "{{ context.host }}"}))
    at_gate(start(workflow))
    html = logged_in(operator).get(QUEUE).content.decode()
    assert "missing reference &#x27;context.host&#x27; in inputs.host" in html


def test_an_operator_approves_with_a_comment_and_the_run_finishes(synced, operator):
    run = start("scan-approve-notify")
    req = at_gate(run)
    response = logged_in(operator).post(
        decide_url(req), {"decision": "approve", "comment": "ship it", "next": QUEUE}, follow=True
    )
    assert response.redirect_chain[-1][0] == QUEUE
    assert f"Approved step 'notify' of run {run.pk}; the run resumes." in messages_of(response)
    assert f'id="approval-{req.pk}"' not in response.content.decode()
    req.refresh_from_db()
    assert (req.status, req.decided_by, req.decision_comment, req.channel) == ("APPROVED", operator, "ship it", "admin")
    assert finish(run).status == RunStatus.SUCCESS


def test_a_reject_without_a_comment_is_refused_with_a_message(make_workflow, operator):
    req = at_gate(start(make_workflow("admin-reject", node("gate", required=True))))
    client = logged_in(operator)
    response = client.post(decide_url(req), {"decision": "reject", "comment": ""}, follow=True)
    assert "a reason is required to reject (send it as the comment)" in messages_of(response)
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING
    response = client.post(decide_url(req), {"decision": "reject", "comment": "no"}, follow=True)
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.REJECTED


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_comment_with_a_nul_character_is_refused_with_a_message(make_workflow, operator, decision):
    req = at_gate(start(make_workflow("admin-nul", node("gate", required=True))))
    response = logged_in(operator).post(
        decide_url(req), {"decision": decision, "comment": "bad\x00x", "next": QUEUE}, follow=True
    )
    assert response.status_code == 200
    assert messages_of(response) == ["comment: NUL character not allowed"]
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING and not req.decisions.exists()


def test_a_bulk_comment_with_a_nul_character_approves_nothing(make_workflow, operator):
    workflow = make_workflow("admin-bulk-nul", node("gate", required=True))
    reqs = [at_gate(start(workflow)) for _ in range(2)]
    response = logged_in(operator).post(
        reverse("admin:approvals_pendingapproval_bulk_approve"),
        {"ids": [r.pk for r in reqs], "comment": "batch\x00"},
        follow=True,
    )
    assert response.status_code == 200
    assert messages_of(response) == ["Nothing was approved: comment: NUL character not allowed."]
    assert not ApprovalRequest.objects.exclude(status=ApprovalRequest.Status.PENDING).exists()


def test_bulk_approve_ignores_ids_that_are_not_numbers(make_workflow, operator):
    req = at_gate(start(make_workflow("admin-bulk-ids", node("gate", required=True))))
    response = logged_in(operator).post(
        reverse("admin:approvals_pendingapproval_bulk_approve"), {"ids": ["\u00b2", "x", ""]}, follow=True
    )
    assert response.status_code == 200
    assert messages_of(response) == ["Select the requests to approve first."]
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING


def test_a_second_decision_shows_who_decided_first(make_workflow, operator, second_operator):
    req = at_gate(start(make_workflow("admin-twice", node("gate", required=True))))
    logged_in(second_operator).post(decide_url(req), {"decision": "approve"})
    response = logged_in(operator).post(decide_url(req), {"decision": "reject", "comment": "wait"}, follow=True)
    (message,) = messages_of(response)
    assert f"approval request {req.pk} was already decided by otto at" in message


def test_a_viewer_sees_the_request_without_buttons_and_a_forged_post_is_refused(make_workflow, viewer):
    req = at_gate(start(make_workflow("admin-viewer", node("gate", required=True))))
    client = logged_in(viewer)
    html = client.get(QUEUE).content.decode()
    assert f'id="approval-{req.pk}"' in html
    assert 'value="approve"' not in html and 'value="reject"' not in html
    assert "Approve selected" not in html
    assert "victor lacks the permission to decide approval requests" in html
    detail = client.get(reverse("admin:approvals_approvalrequest_change", args=[req.pk])).content.decode()
    assert f'id="approval-{req.pk}"' in detail and 'value="approve"' not in detail

    response = client.post(decide_url(req), {"decision": "approve", "comment": "sneaky"}, follow=True)
    assert response.status_code == 200
    assert any("victor lacks the permission" in m for m in messages_of(response))
    bulk_url = reverse("admin:approvals_pendingapproval_bulk_approve")
    asked = " ".join(client.post(bulk_url, {"ids": [req.pk]}).content.decode().split())
    assert "<h1>Nothing to approve</h1>" in asked and "victor lacks the permission" in asked
    bulk = client.post(bulk_url, {"ids": [req.pk], "confirm": "yes"}, follow=True)
    assert any("victor lacks the permission" in m for m in messages_of(bulk))
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING and not req.decisions.exists()


def test_outsiders_are_sent_to_the_login_page(make_workflow, outsider):
    req = at_gate(start(make_workflow("admin-outsider", node("gate", required=True))))
    client = logged_in(outsider)
    assert client.get(QUEUE).status_code == 302
    response = client.post(decide_url(req), {"decision": "approve"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING


def test_decisions_need_a_csrf_token(make_workflow, operator):
    req = at_gate(start(make_workflow("admin-csrf", node("gate", required=True))))
    client = logged_in(operator, csrf=True)
    assert client.post(decide_url(req), {"decision": "approve"}).status_code == 403
    assert client.post(reverse("admin:approvals_pendingapproval_bulk_approve"), {"ids": [req.pk]}).status_code == 403
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING
    assert client.get(decide_url(req)).status_code == 405


def test_bulk_approve_from_the_queue(make_workflow, operator):
    workflow = make_workflow("admin-bulk", node("gate", required=True))
    runs = [start(workflow) for _ in range(3)]
    reqs = [at_gate(run) for run in runs]
    client = logged_in(operator)
    url = reverse("admin:approvals_pendingapproval_bulk_approve")
    asked = client.post(url, {"ids": [reqs[0].pk, reqs[1].pk], "comment": "batch"})
    text = " ".join(asked.content.decode().split())
    assert asked.status_code == 200 and "<h1>Approve 2 requests?</h1>" in text
    assert "Your approval will be recorded on 2 requests with the comment “batch”. 2 runs will resume" in text
    assert text.count("the step is released and the run resumes") == 2
    assert ">Yes, approve 2 requests</button>" in text
    assert [ApprovalRequest.objects.get(pk=r.pk).status for r in reqs] == ["PENDING"] * 3  # asking did nothing
    response = client.post(url, {"ids": [reqs[0].pk, reqs[1].pk], "comment": "batch", "confirm": "yes"}, follow=True)
    assert "Recorded 2 approvals." in messages_of(response)
    statuses = [ApprovalRequest.objects.get(pk=r.pk).status for r in reqs]
    assert statuses == ["APPROVED", "APPROVED", "PENDING"]
    assert ApprovalRequest.objects.get(pk=reqs[0].pk).decision_comment == "batch"
    assert [finish(run).status for run in runs[:2]] == [RunStatus.SUCCESS, RunStatus.SUCCESS]


def test_bulk_approve_action_goes_through_decide(make_workflow, operator):
    workflow = make_workflow("admin-action", node("gate", required=True))
    mine = at_gate(start(workflow, user=operator))
    other = at_gate(start(workflow))
    client = logged_in(operator)
    changelist = reverse("admin:approvals_approvalrequest_changelist")
    asked = " ".join(
        client.post(changelist, {"action": "approve_selected", "_selected_action": [mine.pk, other.pk]})
        .content.decode()
        .split()
    )
    assert "<h1>Approve 1 request?</h1>" in asked
    assert "1 selected request is left alone" in asked and "olivia triggered this run and may not approve it" in asked
    response = client.post(
        changelist,
        {"action": "approve_selected", "post": "yes", "_selected_action": [mine.pk, other.pk]},
        follow=True,
    )
    found = messages_of(response)
    assert "Recorded 1 approval." in found
    assert any("olivia triggered this run and may not approve it" in m for m in found)
    mine.refresh_from_db()
    other.refresh_from_db()
    assert (mine.status, other.status) == ("PENDING", "APPROVED")
    assert other.channel == "admin"


def test_the_viewer_has_no_bulk_action(make_workflow, viewer):
    at_gate(start(make_workflow("admin-noaction", node("gate", required=True))))
    html = logged_in(viewer).get(reverse("admin:approvals_approvalrequest_changelist")).content.decode()
    assert "approve_selected" not in html


def test_a_decided_request_is_read_only_with_its_audit_trail(make_workflow, operator):
    req = at_gate(start(make_workflow("admin-detail", node("gate", required=True, required_approvals=1))))
    client = logged_in(operator)
    client.post(decide_url(req), {"decision": "approve", "comment": "all good"})
    detail = client.get(reverse("admin:approvals_approvalrequest_change", args=[req.pk]))
    html = detail.content.decode()
    assert detail.status_code == 200
    assert "was already decided by olivia at" in html and "all good" in html
    assert "olivia approved via admin" in html
    assert 'value="approve"' not in html
    assert 'name="_save"' not in html  # no edit form
    assert client.post(reverse("admin:approvals_approvalrequest_change", args=[req.pk]), {}).status_code == 403
