"""API tokens: only a hash at rest, compared in constant time, and every endpoint enforces its scope."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from accounts import throttle
from accounts.models import SCOPES, ApiToken, ThrottleCounter
from config.api import api as ninja_api
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db

# Every operation of the API and the scope it needs. A new endpoint fails test_the_table_covers_every_endpoint
# until it is listed here, so none ships unclassified.
REQUIRED_SCOPE = {
    ("POST", "/api/workflows/{slug}/trigger"): "trigger",
    ("GET", "/api/runs"): "read",
    ("GET", "/api/runs/{run_id}"): "read",
    ("POST", "/api/runs/{run_id}/cancel"): "trigger",
    ("POST", "/api/runs/{run_id}/retry"): "trigger",
    ("POST", "/api/runs/{run_id}/rerun"): "trigger",
    ("GET", "/api/workflows"): "read",
    ("GET", "/api/workflows/{slug}"): "read",
    ("GET", "/api/approvals"): "read",
    ("GET", "/api/approvals/{approval_id}"): "read",
    ("POST", "/api/approvals/{approval_id}/approve"): "approve",
    ("POST", "/api/approvals/{approval_id}/reject"): "approve",
}
PATH_VALUES = {
    "slug": "scan-and-notify",
    "run_id": "00000000-0000-4000-8000-000000000000",
    "approval_id": "999999",
}
# A valid body for each operation that takes one, so the scope check is what answers.
BODIES: dict[str, Any] = {
    "trigger": {"context": {}},
    "approve": {"comment": "security test"},
    "reject": {"comment": "security test"},
}


def operations() -> set[tuple[str, str]]:
    schema = ninja_api.get_openapi_schema()
    return {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}


def call(client: ApiClient, method: str, template: str) -> Any:
    path = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], template)
    if method == "GET":
        return client.get(path)
    return client.post(path, BODIES.get(path.rsplit("/", 1)[-1]))


def test_the_table_covers_every_endpoint() -> None:
    assert operations() == set(REQUIRED_SCOPE)


def test_only_a_hash_of_the_token_is_stored(operator: Any) -> None:
    token, value = ApiToken.issue(operator, name="at-rest", scopes=SCOPES)
    secret = value.split("_", 2)[2]
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")  # noqa: S608 - a table name of ours
        stored = " ".join(str(cell) for row in cursor.fetchall() for cell in row)
    assert secret not in stored and value not in stored


def test_tokens_are_compared_in_constant_time(operator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, value = ApiToken.issue(operator, scopes=SCOPES)
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("accounts.models.hmac.compare_digest", spy)
    assert ApiToken.authenticate(value) is not None
    assert ApiToken.authenticate(value[:-1] + ("A" if value[-1] != "A" else "B")) is None
    assert len(calls) == 2


@pytest.mark.parametrize(
    "mangle",
    [
        lambda v: v[:-2],
        lambda v: v.replace("cc_", "xx_", 1),
        lambda v: v + "x",
        lambda v: "cc_" + "0" * 8 + "_" + v.split("_", 2)[2],
        lambda v: "",
    ],
    ids=["truncated", "wrong-prefix", "extended", "other-id", "empty"],
)
def test_a_wrong_token_gets_401_everywhere(operator: Any, synced: None, mangle: Any) -> None:
    _, value = ApiToken.issue(operator, scopes=SCOPES)
    client = ApiClient(mangle(value) or None)
    for method, path in sorted(REQUIRED_SCOPE):
        assert call(client, method, path).status_code == 401, (method, path)


def test_a_revoked_token_gets_401(operator: Any, synced: None) -> None:
    token, value = ApiToken.issue(operator, scopes=SCOPES)
    token.revoked_at = token.created_at
    token.save()
    assert ApiClient(value).get("/api/runs").status_code == 401


@pytest.mark.parametrize("scope", SCOPES)
def test_a_token_without_a_scope_gets_403_from_every_endpoint_that_needs_it(
    operator: Any, synced: None, scope: str
) -> None:
    others = tuple(s for s in SCOPES if s != scope)
    _, value = ApiToken.issue(operator, scopes=others)
    client = ApiClient(value)
    for (method, path), needed in sorted(REQUIRED_SCOPE.items()):
        response = call(client, method, path)
        if needed == scope:
            assert response.status_code == 403, (method, path, response.content)
            assert scope in response.json()["detail"]
        else:
            assert response.status_code != 403 or "scope" not in response.json().get("detail", ""), (method, path)


def test_a_read_only_token_cannot_change_anything(operator: Any, synced: None) -> None:
    _, value = ApiToken.issue(operator, scopes=("read",))
    client = ApiClient(value)
    changing = [(m, p) for (m, p), s in REQUIRED_SCOPE.items() if m != "GET"]
    assert {p.rsplit("/", 1)[-1] for _, p in changing} == {"trigger", "cancel", "retry", "rerun", "approve", "reject"}
    for method, path in changing:
        assert call(client, method, path).status_code == 403, (method, path)
    from workflows.models import WorkflowRun

    assert not WorkflowRun.objects.exists()


# --- 401 before CSRF, and wrong tokens limited per client address -----------------------------------------


def test_a_bad_token_is_401_even_beside_a_signed_in_session_and_a_good_one_needs_no_csrf(
    operator: Any, synced: None
) -> None:
    browser = ApiClient.session(operator, csrf=False)  # a console tab's cookies, without the CSRF header
    for value in ("cc_deadbeef_" + "x" * 43, "garbage"):
        response = browser.post("/api/workflows/scan-and-notify/trigger", {"context": {}}, headers=bearer(value))
        assert response.status_code == 401, response.content
        assert response["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'
    _, value = ApiToken.issue(operator, scopes=SCOPES)
    response = browser.post("/api/workflows/scan-and-notify/trigger", {"context": {}}, headers=bearer(value))
    assert response.status_code == 202  # a bearer token is not sent by the browser on its own: no CSRF needed
    from workflows.models import WorkflowRun

    assert WorkflowRun.objects.count() == 1


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@override_settings(API_TOKEN_MAX_FAILURES=3, API_TOKEN_FAILURE_WINDOW_SECONDS=120)
def test_wrong_tokens_from_one_address_are_limited_and_logged_with_it(
    operator: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, django_assert_num_queries: Any
) -> None:
    monkeypatch.setattr(throttle, "_blocked", {})
    guesser, other = "198.51.100.23", "198.51.100.24"
    _, good = ApiToken.issue(operator, scopes=SCOPES)
    wrong = ApiClient("cc_deadbeef_" + "x" * 43)
    with caplog.at_level(logging.WARNING, logger="accounts.throttle"):
        for _ in range(3):
            assert wrong.get("/api/runs", REMOTE_ADDR=guesser).status_code == 401
        blocked = wrong.post("/api/workflows/x/trigger", {"context": {}}, REMOTE_ADDR=guesser)
    assert blocked.status_code == 429 and 100 < int(blocked["Retry-After"]) <= 120
    assert "too many invalid API tokens" in blocked.json()["detail"]
    failures = [r for r in caplog.records if getattr(r, "event", "") == "auth.token_failed"]
    assert [(r.client_address, r.token_prefix) for r in failures] == [(guesser, "deadbeef")] * 4  # type: ignore[attr-defined]
    # From now on this process refuses the address without looking any token up, even a good one ...
    with django_assert_num_queries(0):
        assert ApiClient(good).get("/api/runs", REMOTE_ADDR=guesser).status_code == 429
    # ... while other addresses are served, and another process learns the block from the database.
    assert ApiClient(good).get("/api/runs", REMOTE_ADDR=other).status_code == 200
    monkeypatch.setattr(throttle, "_blocked", {})
    assert wrong.get("/api/runs", REMOTE_ADDR=guesser).status_code == 429
    assert ThrottleCounter.objects.get(key=f"api-token-address:{guesser}").count == 5
