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
    assert api.get("/api/approvals/999999").status_code == 404
    assert api.post("/api/approvals/999999/approve", {"comment": "x"}).status_code == 404


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
