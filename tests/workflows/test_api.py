"""The HTTP API contract: triggering, reading, cancelling and retrying runs, and every refusal."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User

from accounts.models import SCOPES, ApiToken
from tests.conftest import ApiClient, finish
from workflows.models import RunStatus, Workflow, WorkflowRun

pytestmark = pytest.mark.django_db

TRIGGER = "/api/workflows/scan-and-notify/trigger"


def test_trigger_returns_202_with_the_run_and_links(synced: None, api: ApiClient) -> None:
    response = api.post(TRIGGER, {"context": {"target": "db01"}})
    assert response.status_code == 202, response.content
    body = response.json()
    run = WorkflowRun.objects.get(id=body["id"])
    assert body["status"] == "PENDING" and body["workflow"] == "scan-and-notify" and body["trigger"] == "api"
    assert body["links"]["self"].endswith(f"/api/runs/{run.id}")
    assert body["links"]["admin"].endswith(f"/admin/workflows/workflowrun/{run.id}/change/")
    assert run.triggered_by is not None
    assert run.context == {"target": "db01"} and run.triggered_by.username == "olivia"


def test_context_json_is_accepted_as_in_older_clients(synced: None, api: ApiClient) -> None:
    response = api.post(TRIGGER, {"contextJson": {"target": "web02"}})
    assert response.status_code == 202
    assert WorkflowRun.objects.get(id=response.json()["id"]).context == {"target": "web02"}


@pytest.mark.parametrize("body", [b"", b"{}"], ids=["no-body", "empty-object"])
def test_an_empty_body_starts_a_run_with_an_empty_context(synced: None, api: ApiClient, body: bytes) -> None:
    response = api.post(TRIGGER, raw=body)
    assert response.status_code == 202
    assert WorkflowRun.objects.get(id=response.json()["id"]).context == {}


def test_a_triggered_run_reaches_success_with_every_attempt_recorded(synced: None, api: ApiClient) -> None:
    run_id = api.post(TRIGGER, {"context": {"target": "db01"}}).json()["id"]
    finish(WorkflowRun.objects.get(id=run_id))
    body = api.get(f"/api/runs/{run_id}").json()
    assert body["status"] == "SUCCESS"
    attempts = {a["step"]: a for a in body["attempts"]}
    assert [(a["step"], a["attempt"], a["status"]) for a in body["attempts"][:2]] == [
        ("scan", 1, "SUCCESS"),
        ("summarise", 1, "SUCCESS"),
    ]
    assert {k: (a["attempt"], a["status"]) for k, a in attempts.items()} == {
        "scan": (1, "SUCCESS"),
        "summarise": (1, "SUCCESS"),
        "notify": (1, "SUCCESS"),
        "notify-slack": (1, "SUCCESS"),
        "notify-webhook": (1, "SUCCESS"),
    }
    notify = attempts["notify"]
    assert notify["input"]["message"].startswith("Scan of db01 found ")
    assert notify["duration_seconds"] >= 0
    assert [t["to_status"] for t in body["transitions"]] == ["PENDING", "RUNNING", "SUCCESS"]
    assert {s["key"]: s["status"] for s in body["steps"]} == dict.fromkeys(attempts, "SUCCESS")
    assert "ALERT_WEBHOOK_URL is not set" in attempts["notify-webhook"]["output"]["skipped"]


def test_scan_and_notify_delivers_to_a_configured_webhook(
    synced: None, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from agents import http

    sent: list[httpx.Request] = []

    def remote(request: httpx.Request, *, timeout: float) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    monkeypatch.setenv("ALERT_WEBHOOK_URL", "https://hooks.example.test/cc")
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET", "s3cret")
    monkeypatch.setattr(http, "send", remote)
    run_id = api.post(TRIGGER, {"context": {"target": "db01"}}).json()["id"]
    run = finish(WorkflowRun.objects.get(id=run_id))
    assert run.status == RunStatus.SUCCESS
    assert len(sent) == 1 and str(sent[0].url) == "https://hooks.example.test/cc"
    body = json.loads(sent[0].content)
    assert "Scan of db01 found" in json.dumps(body) and str(run.id) in json.dumps(body)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"{not json", 400, "Cannot parse request body"),
        (b'{"context": [1, 2]}', 422, "dict"),
        (b'{"context": "text"}', 422, "dict"),
        (b"[1, 2]", 422, ""),
        (b'{"context": {}, "contextJson": {}}', 422, "either context or contextJson"),
    ],
)
def test_bad_bodies_get_a_clear_error_and_no_run(
    synced: None, api: ApiClient, body: bytes, status: int, detail: str
) -> None:
    response = api.post(TRIGGER, raw=body)
    assert response.status_code == status, response.content
    assert detail in json.dumps(response.json())
    assert not WorkflowRun.objects.exists()


def errors(response: Any) -> list[tuple[list[Any], str]]:
    """(location, message) of each validation error in a 422 answer."""
    return [(e["loc"], e["msg"]) for e in response.json()["detail"]]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b'{"context": {"a": NaN}}', "context", "context.a: non-finite number (NaN) not allowed"),
        (b'{"context": {"a": Infinity}}', "context", "context.a: non-finite number (Infinity) not allowed"),
        (b'{"context": {"a": {"b": [1, -Infinity]}}}', "context", "context.a.b[1]: non-finite number (-Infinity)"),
        (b'{"context": {"a": "x\\u0000y"}}', "context", "context.a: NUL character not allowed"),
        (b'{"context": {"x\\u0000y": 1}}', "context", 'context: NUL character not allowed in key "x\\u0000y"'),
        (b'{"context": {"ok": 1, "a b": ["\\u0000"]}}', "context", 'context["a b"][0]: NUL character not allowed'),
        (b'{"contextJson": {"a": NaN}}', "contextJson", "contextJson.a: non-finite number (NaN) not allowed"),
    ],
    ids=["nan", "infinity", "nested-minus-infinity", "nul-in-value", "nul-in-key", "nul-in-list", "context-json"],
)
def test_json_postgresql_cannot_store_is_422_naming_where(
    synced: None, api: ApiClient, body: bytes, field: str, message: str
) -> None:
    response = api.post(TRIGGER, raw=body)
    assert response.status_code == 422, response.content
    [(loc, msg)] = errors(response)
    assert loc == ["body", "payload", field] and message in msg
    assert not WorkflowRun.objects.exists()


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        (b'{"context": null}', ["body", "payload", "context"], "valid dictionary"),
        (b'{"contextJson": null}', ["body", "payload", "contextJson"], "valid dictionary"),
        (b'{"ctx": {"target": "db01"}}', ["body", "payload", "ctx"], "Extra inputs are not permitted"),
        (b'{"context": {}, "target": "db01"}', ["body", "payload", "target"], "Extra inputs are not permitted"),
        (b"null", ["body", "payload"], "must be a JSON object with 'context'"),
    ],
    ids=["null-context", "null-context-json", "misspelt-field", "extra-field", "null-body"],
)
def test_a_null_context_or_an_unknown_field_is_422_naming_it(
    synced: None, api: ApiClient, body: bytes, loc: list[str], message: str
) -> None:
    response = api.post(TRIGGER, raw=body)
    assert response.status_code == 422, response.content
    [(where, msg)] = errors(response)
    assert where == loc and message in msg
    assert not WorkflowRun.objects.exists()


def test_an_oversized_body_gets_413(synced: None, api: ApiClient, settings: Any) -> None:
    settings.API_MAX_BODY_BYTES = 2048
    response = api.post(TRIGGER, {"context": {"blob": "x" * 5000}})
    assert response.status_code == 413
    assert "exceeds the limit of 2048 bytes" in response.json()["detail"]
    assert not WorkflowRun.objects.exists()


def test_an_unknown_workflow_is_404_naming_it(synced: None, api: ApiClient) -> None:
    response = api.post("/api/workflows/nope/trigger", {"context": {}})
    assert response.status_code == 404
    assert response.json() == {"detail": "workflow 'nope' not found"}
    response = api.get("/api/workflows/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "workflow 'nope' not found"}
    # A NUL cannot be in a slug, and PostgreSQL would refuse to compare one: still a plain 404.
    response = api.get("/api/workflows/a%00b")
    assert response.status_code == 404
    assert response.json()["detail"] == "workflow 'a\\x00b' not found"


def test_a_disabled_workflow_is_409(synced: None, api: ApiClient) -> None:
    Workflow.objects.filter(slug="scan-and-notify").update(enabled=False)
    response = api.post(TRIGGER, {"context": {}})
    assert response.status_code == 409
    assert response.json()["detail"] == "workflow 'scan-and-notify' is disabled"


@pytest.mark.parametrize("header", [None, "Bearer nonsense", "Bearer cc_deadbeef_wrongsecret", "Basic abc"])
def test_missing_or_invalid_credentials_are_401(synced: None, operator: User, header: str | None) -> None:
    client = ApiClient(None)
    headers = {"Authorization": header} if header else {}
    response = client.post(TRIGGER, {"context": {}}, headers=headers)
    assert response.status_code == 401
    assert "Bearer" in response.json()["detail"] and response["WWW-Authenticate"].startswith("Bearer")
    assert not WorkflowRun.objects.exists()


def test_a_revoked_token_is_401_and_use_is_recorded(synced: None, operator: User) -> None:
    token, value = ApiToken.issue(operator, scopes=SCOPES)
    client = ApiClient(value)
    assert client.get("/api/workflows").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None and token.token_hash != value and value.endswith(value[-8:])
    ApiToken.objects.filter(id=token.id).update(revoked_at=token.last_used_at)
    assert client.get("/api/workflows").status_code == 401


def test_a_token_without_the_scope_is_403(synced: None, operator: User) -> None:
    _, value = ApiToken.issue(operator, scopes=("read",))
    response = ApiClient(value).post(TRIGGER, {"context": {}})
    assert response.status_code == 403 and "'trigger' scope" in response.json()["detail"]


def test_the_scope_is_checked_before_the_workflow_is_looked_up(synced: None, operator: User) -> None:
    _, value = ApiToken.issue(operator, scopes=("read",))
    response = ApiClient(value).post("/api/workflows/nope/trigger", {"context": {}})
    assert response.status_code == 403 and "'trigger' scope" in response.json()["detail"]


def test_a_body_that_breaks_the_schema_is_422_before_the_scope_is_checked(synced: None, operator: User) -> None:
    _, value = ApiToken.issue(operator, scopes=("read",))
    response = ApiClient(value).post(TRIGGER, raw=b'{"ctx": {}}')
    assert response.status_code == 422
    assert errors(response) == [(["body", "payload", "ctx"], "Extra inputs are not permitted")]
    assert not WorkflowRun.objects.exists()


def test_a_staff_session_may_use_the_api_with_its_csrf_token(synced: None, operator: User) -> None:
    client = ApiClient.session(operator)
    assert client.get("/api/workflows").status_code == 200
    assert client.post(TRIGGER, {"context": {}}).status_code == 202
    without = ApiClient.session(operator, csrf=False)
    assert without.get("/api/workflows").status_code == 200  # reading needs no CSRF token
    response = without.post(TRIGGER, {"context": {}})
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert WorkflowRun.objects.count() == 1


def test_the_same_idempotency_key_and_body_returns_the_first_run(synced: None, api: ApiClient) -> None:
    headers = {"Idempotency-Key": "deploy-42"}
    first = api.post(TRIGGER, {"context": {"target": "a"}}, headers=headers)
    second = api.post(TRIGGER, {"context": {"target": "a"}}, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert WorkflowRun.objects.count() == 1


def test_the_same_idempotency_key_with_another_body_is_422(synced: None, api: ApiClient) -> None:
    headers = {"Idempotency-Key": "deploy-43"}
    first = api.post(TRIGGER, {"context": {"target": "a"}}, headers=headers)
    second = api.post(TRIGGER, {"context": {"target": "b"}}, headers=headers)
    assert second.status_code == 422
    assert "deploy-43" in second.json()["detail"] and second.json()["run_id"] == first.json()["id"]
    assert WorkflowRun.objects.count() == 1


def test_runs_are_listed_newest_first_filtered_and_paginated(synced: None, api: ApiClient) -> None:
    ids = [api.post(TRIGGER, {"context": {"n": i}}).json()["id"] for i in range(3)]
    api.post("/api/workflows/test-failure/trigger", {"context": {}})
    body = api.get("/api/runs?workflow=scan-and-notify&limit=2").json()
    assert body["count"] == 3 and [r["id"] for r in body["items"]] == ids[::-1][:2]
    assert api.get("/api/runs?status=SUCCESS").json()["count"] == 0
    assert api.get("/api/runs?status=PENDING").json()["count"] == 4
    assert api.get("/api/runs?status=BOGUS").status_code == 422


def test_unknown_and_malformed_run_ids(synced: None, api: ApiClient) -> None:
    missing = uuid.uuid4()
    for response in (
        api.get(f"/api/runs/{missing}"),
        api.post(f"/api/runs/{missing}/cancel"),
        api.post(f"/api/runs/{missing}/retry"),
        api.post(f"/api/runs/{missing}/rerun"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": f"run {missing} not found"}
    assert api.get("/api/runs/not-a-uuid").status_code == 422


def test_cancel_a_run_then_cancelling_again_is_409(synced: None, api: ApiClient) -> None:
    run_id = api.post(TRIGGER, {"context": {}}).json()["id"]
    response = api.post(f"/api/runs/{run_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "CANCELLED"
    again = api.post(f"/api/runs/{run_id}/cancel")
    assert again.status_code == 409 and "cannot move from CANCELLED to CANCELLED" in again.json()["detail"]


def test_retry_a_failed_run_and_refuse_retrying_a_running_one(synced: None, api: ApiClient, settings: object) -> None:
    run_id = api.post("/api/workflows/test-failure/trigger", {"context": {}}).json()["id"]
    assert api.post(f"/api/runs/{run_id}/retry").status_code == 409
    run = finish(WorkflowRun.objects.get(id=run_id), timeout=30)
    assert run.status == RunStatus.FAILED
    response = api.post(f"/api/runs/{run_id}/retry")
    assert response.status_code == 200 and response.json()["status"] == "RUNNING"


def test_rerun_starts_a_new_run_with_the_same_context_linked_to_the_first(synced: None, api: ApiClient) -> None:
    first = api.post(TRIGGER, {"context": {"host": "db-1", "n": [1, 2]}}).json()
    assert first["rerun_of"] is None
    response = api.post(f"/api/runs/{first['id']}/rerun")

    assert response.status_code == 202, response.content
    again = response.json()
    assert again["id"] != first["id"] and again["rerun_of"] == first["id"] and again["trigger"] == "rerun"
    rerun = WorkflowRun.objects.get(id=again["id"])
    assert rerun.context == {"host": "db-1", "n": [1, 2]} and rerun.triggered_by is not None
    assert api.get(f"/api/runs/{again['id']}").json()["rerun_of"] == first["id"]


def test_rerun_of_a_disabled_workflow_is_409(synced: None, api: ApiClient) -> None:
    run_id = api.post(TRIGGER, {"context": {}}).json()["id"]
    Workflow.objects.filter(slug="scan-and-notify").update(enabled=False)
    response = api.post(f"/api/runs/{run_id}/rerun")
    assert response.status_code == 409 and "disabled" in response.json()["detail"]


def test_workflows_are_listed_and_described(synced: None, api: ApiClient) -> None:
    slugs = [w["slug"] for w in api.get("/api/workflows").json()]
    assert {"scan-and-notify", "test-failure", "chain-40"} <= set(slugs)
    detail = api.get("/api/workflows/scan-and-notify").json()
    assert [(n["key"], n["agent"], n["depends_on"]) for n in detail["nodes"]] == [
        ("scan", "scanner", []),
        ("summarise", "summariser", ["scan"]),
        ("notify", "log-notifier", ["summarise"]),
        ("notify-slack", "alert-slack", ["summarise"]),
        ("notify-webhook", "alert-webhook", ["summarise"]),
    ]
    assert api.get("/api/workflows/nope").json() == {"detail": "workflow 'nope' not found"}


def test_the_openapi_schema_is_served(synced: None, api: ApiClient) -> None:
    schema = api.get("/api/openapi.json").json()
    assert "/api/workflows/{slug}/trigger" in schema["paths"]


def test_health_endpoints(db: None) -> None:
    from django.test import Client

    client = Client()
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize("value", ["scan%00and-notify", "%00", "x%00"])
def test_a_nul_character_in_the_workflow_filter_is_422_naming_the_parameter(
    synced: None, api: ApiClient, value: str
) -> None:
    response = api.get(f"/api/runs?workflow={value}")
    assert response.status_code == 422, response.content
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "workflow"] and "NUL character not allowed" in error["msg"]
    assert api.get("/api/runs?workflow=scan-and-notify%C3%A9").json()["count"] == 0  # other text is fine
