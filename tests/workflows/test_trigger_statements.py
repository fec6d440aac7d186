"""The statements of a trigger request, counted on PostgreSQL: each one is a psycopg span when queries are traced,
and ORM work on the web tier's CPU either way.

What a trigger must do is fixed: authenticate the token, read the workflow's definition, and write the run, its
steps, its first transition and the task of each ready step, all in one transaction (a worker never sees a run
without its steps, or a step without its task). The idempotency key is enforced by the unique constraint on
(workflow, idempotency_key): the insert of the run is what finds an earlier run with the same key, so a key
costs no statement of its own. Before: 7 statements (8 with a key), 6 now, key or not.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import ApiToken
from tests.conftest import ApiClient
from workflows.models import RunStep, RunTransition, WorkflowRun

WORKFLOW = "noop-3"  # three steps in a chain: one of them is ready at once
TRIGGER = f"/api/workflows/{WORKFLOW}/trigger"


@pytest.fixture
def admin_api(synced: None) -> ApiClient:
    """A superuser's token, as in the benchmark: no permission queries beside the token's own."""
    user = User.objects.create_superuser("root", password="root-pass-1")
    _, value = ApiToken.issue(user, name="tests", scopes=("trigger", "read"))
    return ApiClient(value)


def _statements(captured: CaptureQueriesContext) -> list[str]:
    """Each statement as its verb and the first table it names; BEGIN and COMMIT as themselves."""
    shapes = []
    for query in captured.captured_queries:
        sql = query["sql"]
        verb = sql.split(None, 1)[0].upper()
        table = re.search(r'(?:FROM|INTO) "(\w+)"', sql)
        shapes.append(f"{verb} {table.group(1)}" if table and verb in ("SELECT", "INSERT") else verb)
    return shapes


def _tasks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_tasks_database_dbtaskresult")
        return int(cursor.fetchone()[0])


def _rows() -> tuple[int, int, int, int]:
    return WorkflowRun.objects.count(), RunStep.objects.count(), RunTransition.objects.count(), _tasks()


TRIGGERED = [
    "SELECT accounts_apitoken",  # the token, with its user
    "SELECT workflows_workflownode",  # the definition: the workflow's nodes, with the workflow and the agents
    "BEGIN",
    "INSERT workflows_workflowrun",  # with the key, if any: the unique constraint checks it
    "INSERT workflows_runstep",
    "INSERT workflows_runtransition",
    "INSERT django_tasks_database_dbtaskresult",  # the ready step's task, in the same transaction
    "COMMIT",
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("key", [None, "deploy-7"], ids=["without-key", "with-key"])
def test_a_trigger_request_runs_six_statements_in_one_transaction(admin_api: ApiClient, key: str | None) -> None:
    admin_api.post(TRIGGER, {})  # the first request in a process also reads content types and the like
    headers = {"Idempotency-Key": key} if key else {}
    with CaptureQueriesContext(connection) as captured:
        response = admin_api.post(TRIGGER, {"context": {"n": 1}}, headers=headers)
    assert response.status_code == 202, response.content
    assert _statements(captured) == TRIGGERED
    assert len([s for s in _statements(captured) if s not in ("BEGIN", "COMMIT")]) == 6


@pytest.mark.django_db(transaction=True)
def test_a_replay_writes_nothing_and_returns_the_first_run(admin_api: ApiClient) -> None:
    headers = {"Idempotency-Key": "deploy-8"}
    first = admin_api.post(TRIGGER, {"context": {"n": 1}}, headers=headers)
    before = _rows()
    with CaptureQueriesContext(connection) as captured:
        again = admin_api.post(TRIGGER, {"context": {"n": 1}}, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["id"] == first.json()["id"]
    assert _rows() == before
    # The insert finds the earlier run; the transaction is rolled back, then the earlier run is read.
    assert _statements(captured) == [
        "SELECT accounts_apitoken",
        "SELECT workflows_workflownode",
        "BEGIN",
        "INSERT workflows_workflowrun",
        "ROLLBACK",
        "SELECT workflows_workflowrun",
    ]
    other = admin_api.post(TRIGGER, {"context": {"n": 2}}, headers=headers)
    assert other.status_code == 422 and other.json()["run_id"] == first.json()["id"]
    assert _rows() == before


@pytest.mark.django_db(transaction=True)
def test_requests_with_the_same_key_at_the_same_moment_start_one_run(admin_api: ApiClient) -> None:
    barrier = threading.Barrier(4)
    answers: list[Any] = []

    def send() -> None:
        try:
            barrier.wait(5)
            answers.append(admin_api.post(TRIGGER, {"context": {"n": 3}}, headers={"Idempotency-Key": "deploy-9"}))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [a.status_code for a in answers] == [202] * 4, [a.content for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert _rows() == (1, 3, 1, 1)


@pytest.mark.django_db(transaction=True)
def test_a_workflow_without_nodes_and_an_unknown_one(admin_api: ApiClient) -> None:
    from workflows.models import Workflow

    Workflow.objects.create(slug="empty", name="Empty")
    response = admin_api.post("/api/workflows/empty/trigger", {})
    assert response.status_code == 202, response.content
    run = WorkflowRun.objects.get(id=response.json()["id"])
    assert run.definition["nodes"] == [] and run.definition["slug"] == "empty"
    missing = admin_api.post("/api/workflows/nowhere/trigger", {})
    assert missing.status_code == 404 and "nowhere" in missing.json()["detail"]
