"""GET /api/approvals, GET /api/approvals/{id}, POST .../approve and .../reject."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiToken
from approvals.models import ApprovalRequest
from tests.approvals.conftest import at_gate, node, start
from tests.conftest import ApiClient, finish
from workflows.models import RunStatus

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def gated(make_workflow):
    return make_workflow("api-gate", node("gate", required=True), node("after", depends_on=["gate"]))


def client_for(user, scopes=("trigger", "read", "approve")) -> ApiClient:
    return ApiClient(ApiToken.issue(user, name="t", scopes=scopes)[1])


def test_it_lists_pending_requests(api, gated):
    waiting = at_gate(start(gated))
    done = at_gate(start(gated))
    ApprovalRequest.objects.filter(id=done.id).update(status=ApprovalRequest.Status.CANCELLED)

    response = api.get("/api/approvals?status=PENDING")
    assert response.status_code == 200
    items = response.json()["items"]
    assert [i["id"] for i in items] == [waiting.id]
    item = items[0]
    assert item["workflow"] == "api-gate" and item["step"] == "gate" and item["status"] == "PENDING"
    assert item["run_id"] == str(waiting.run_id)
    assert item["required_approvals"] == 1 and item["approvals"] == 0
    assert item["links"]["approve"].endswith(f"/api/approvals/{waiting.id}/approve")
    assert api.get("/api/approvals?status=NOPE").status_code == 422


def test_it_shows_one_request_and_404s_an_unknown_one(api, gated):
    req = at_gate(start(gated))
    response = api.get(f"/api/approvals/{req.id}")
    assert response.status_code == 200
    assert response.json()["id"] == req.id and response.json()["decisions"] == []
    for response in (
        api.get("/api/approvals/999999"),
        api.post("/api/approvals/999999/approve", {"comment": "x"}),
        api.post("/api/approvals/999999/reject", {"comment": "x"}),
        api.post("/api/approvals/999999/reject"),  # the missing request, not the missing reason
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "approval request 999999 not found"}


def test_approving_resumes_the_run(api, gated, operator):
    req = at_gate(start(gated))
    response = api.post(f"/api/approvals/{req.id}/approve", {"comment": "go"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "APPROVED" and body["decided_by"] == "olivia" and body["channel"] == "api"
    assert body["decision_comment"] == "go" and body["wait_seconds"] > 0
    assert [(d["user"], d["decision"], d["comment"]) for d in body["decisions"]] == [("olivia", "approve", "go")]
    assert finish(req.run).status == RunStatus.SUCCESS


def test_approve_needs_no_body(api, gated):
    req = at_gate(start(gated))
    assert api.post(f"/api/approvals/{req.id}/approve").status_code == 200


def test_rejecting_needs_a_reason(api, gated):
    req = at_gate(start(gated))
    for body in ({}, {"comment": ""}, {"comment": "  "}, None):
        response = api.post(f"/api/approvals/{req.id}/reject", body)
        assert response.status_code == 422, (body, response.content)
        assert "reason is required" in response.json()["detail"]
    response = api.post(f"/api/approvals/{req.id}/reject", {"comment": "bad target"})
    assert response.status_code == 200
    assert response.json()["status"] == "REJECTED"
    req.run.refresh_from_db()
    assert req.run.status == RunStatus.REJECTED


def test_a_user_without_the_decide_permission_gets_403(gated, viewer):
    req = at_gate(start(gated))
    client = client_for(viewer)
    assert client.get(f"/api/approvals/{req.id}").status_code == 200
    response = client.post(f"/api/approvals/{req.id}/approve", {"comment": "me too"})
    assert response.status_code == 403
    assert "victor lacks the permission" in response.json()["detail"]
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING


def test_a_token_without_the_approve_scope_gets_403(gated, operator):
    req = at_gate(start(gated))
    response = client_for(operator, scopes=("read", "trigger")).post(f"/api/approvals/{req.id}/approve", {})
    assert response.status_code == 403
    assert "lacks the 'approve' scope" in response.json()["detail"]
    assert not req.decisions.exists()


def test_approving_ones_own_run_gets_403_with_the_reason(api, gated, operator):
    req = at_gate(start(gated, user=operator))
    response = api.post(f"/api/approvals/{req.id}/approve", {"comment": "mine"})
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "olivia triggered this run and may not approve it (self-approval is off for step 'gate')"
    )


def test_a_decided_request_gets_409_with_who_and_when(api, gated, second_operator):
    req = at_gate(start(gated))
    assert client_for(second_operator).post(f"/api/approvals/{req.id}/approve", {}).status_code == 200
    response = api.post(f"/api/approvals/{req.id}/reject", {"comment": "too late"})
    assert response.status_code == 409
    body = response.json()
    req.refresh_from_db()
    assert req.decided_at is not None
    assert body["status"] == "APPROVED" and body["decided_by"] == "otto"
    assert body["decided_at"] == req.decided_at.isoformat()
    assert "already decided by otto at" in body["detail"]


def test_an_expired_request_gets_409(api, make_workflow):
    req = at_gate(start(make_workflow("api-expiry", node("gate", required=True, timeout_seconds=60))))
    ApprovalRequest.objects.filter(id=req.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api.post(f"/api/approvals/{req.id}/approve", {})
    assert response.status_code == 409
    assert response.json()["status"] == "EXPIRED"
    assert f"approval request {req.id} expired at" in response.json()["detail"]


def test_anonymous_callers_get_401(anonymous_api, gated):
    req = at_gate(start(gated))
    assert anonymous_api.get("/api/approvals").status_code == 401
    assert anonymous_api.post(f"/api/approvals/{req.id}/approve", {}).status_code == 401


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_a_comment_with_a_nul_character_gets_422_naming_it(api, gated, action):
    req = at_gate(start(gated))
    response = api.post(f"/api/approvals/{req.id}/{action}", raw=b'{"comment": "bad\\u0000x"}')
    assert response.status_code == 422, response.content
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "payload", "comment"]
    assert "comment: NUL character not allowed" in error["msg"]
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING and not req.decisions.exists()


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        (b"[1]", ["body", "payload"], "must be a JSON object"),
        (b"null", ["body", "payload"], "must be a JSON object"),
        (b'"ok"', ["body", "payload"], "must be a JSON object"),
        (b"1", ["body", "payload"], "must be a JSON object"),
        (b'{"comments": "looks fine"}', ["body", "payload", "comments"], "Extra inputs are not permitted"),
    ],
    ids=["list", "null", "string", "number", "misspelt-field"],
)
def test_a_body_that_is_not_a_decision_object_gets_422(api, gated, body, loc, message):
    req = at_gate(start(gated))
    for action in ("approve", "reject"):
        response = api.post(f"/api/approvals/{req.id}/{action}", raw=body)
        assert response.status_code == 422, (action, response.content)
        [error] = response.json()["detail"]
        assert error["loc"] == loc and message in error["msg"]
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING and not req.decisions.exists()


def test_without_permission_a_reject_without_reason_is_403_not_422(gated, viewer):
    req = at_gate(start(gated))
    response = client_for(viewer).post(f"/api/approvals/{req.id}/reject")
    assert response.status_code == 403
    assert "victor lacks the permission" in response.json()["detail"]


def test_a_reject_without_reason_of_a_decided_request_is_409_not_422(api, gated, second_operator):
    req = at_gate(start(gated))
    assert client_for(second_operator).post(f"/api/approvals/{req.id}/approve").status_code == 200
    response = api.post(f"/api/approvals/{req.id}/reject", {})
    assert response.status_code == 409
    assert response.json()["status"] == "APPROVED" and "already decided by otto at" in response.json()["detail"]


def test_a_nul_character_in_the_workflow_filter_is_422_naming_the_parameter(api, gated):
    at_gate(start(gated))
    response = api.get("/api/approvals?workflow=api%00gate")
    assert response.status_code == 422, response.content
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "workflow"] and "NUL character not allowed" in error["msg"]
    assert api.get("/api/approvals?workflow=api-gate").json()["count"] == 1
