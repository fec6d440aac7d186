"""Who may do what over the API: every operation x every kind of caller -> the status it gets.

Each caller meets CSRF as a real client does (tests.conftest.ApiClient): sessions send the csrftoken cookie's
value in X-CSRFToken, tokens need none. Every allowed cell works on objects of its own, so the expected
status is the operation's success; every refused cell leaves the database as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone

from accounts.models import SCOPES, ApiToken
from accounts.roles import ensure_roles
from agents.models import Agent
from approvals.models import ApprovalRequest
from config.api import api as ninja_api
from tests.conftest import ApiClient
from workflows import runner
from workflows.models import RunStatus, Workflow, WorkflowNode, WorkflowRun
from workflows.services import trigger_workflow

pytestmark = pytest.mark.django_db

# operation -> (what it needs: read / trigger / approve, the status it answers when allowed)
OPERATIONS: dict[tuple[str, str], tuple[str, int]] = {
    ("POST", "/api/workflows/{slug}/trigger"): ("trigger", 202),
    ("GET", "/api/runs"): ("read", 200),
    ("GET", "/api/runs/{run_id}"): ("read", 200),
    ("POST", "/api/runs/{run_id}/cancel"): ("trigger", 200),
    ("POST", "/api/runs/{run_id}/retry"): ("trigger", 200),
    ("POST", "/api/runs/{run_id}/rerun"): ("trigger", 202),
    ("GET", "/api/workflows"): ("read", 200),
    ("GET", "/api/workflows/{slug}"): ("read", 200),
    ("GET", "/api/approvals"): ("read", 200),
    ("GET", "/api/approvals/{approval_id}"): ("read", 200),
    ("POST", "/api/approvals/{approval_id}/approve"): ("approve", 200),
    ("POST", "/api/approvals/{approval_id}/reject"): ("approve", 200),
}

# caller -> what it may do (the scopes its permissions and token allow); anything else is refused with this status
CALLERS: dict[str, tuple[set[str], int]] = {
    "anonymous": (set(), 401),
    "bad token": (set(), 401),
    "read token": ({"read"}, 403),
    "trigger token": ({"trigger"}, 403),
    "viewer's token with every scope": ({"read"}, 403),
    "viewer session": ({"read"}, 403),
    "operator session": ({"read", "trigger", "approve"}, 403),
    "superuser": ({"read", "trigger", "approve"}, 403),
}


@pytest.fixture
def people(db: None) -> dict[str, User]:
    ensure_roles()
    viewer = User.objects.create_user("vera", is_staff=True)
    viewer.groups.add(Group.objects.get(name="viewers"))
    operator = User.objects.create_user("omar", is_staff=True)
    operator.groups.add(Group.objects.get(name="operators"))
    return {"viewer": viewer, "operator": operator, "root": User.objects.create_superuser("root")}


def client_for(caller: str, people: dict[str, User]) -> ApiClient:
    token = lambda user, scopes: ApiToken.issue(user, name=caller, scopes=scopes)[1]  # noqa: E731
    make: dict[str, Callable[[], ApiClient]] = {
        "anonymous": lambda: ApiClient(None),
        "bad token": lambda: ApiClient("cc_deadbeef_" + "x" * 43),
        "read token": lambda: ApiClient(token(people["operator"], ("read",))),
        "trigger token": lambda: ApiClient(token(people["operator"], ("trigger",))),
        "viewer's token with every scope": lambda: ApiClient(token(people["viewer"], SCOPES)),
        "viewer session": lambda: ApiClient.session(people["viewer"]),
        "operator session": lambda: ApiClient.session(people["operator"]),
        "superuser": lambda: ApiClient.session(people["root"]),
    }
    return make[caller]()


def gated_workflow() -> Workflow:
    """A gated root step: each run opens an approval request at once, without a worker."""
    agent, _ = Agent.objects.get_or_create(slug="echo", defaults={"type": "echo"})
    workflow = Workflow.objects.create(slug="matrix", name="Matrix")
    WorkflowNode.objects.create(workflow=workflow, key="gate", agent=agent, requires_approval=True)
    return workflow


def fresh_path(template: str, workflow: Workflow) -> str:
    """The operation's path, with a run or request of its own where it names one."""
    run, _ = trigger_workflow(workflow, context={"n": 1})
    if template.endswith("/retry"):
        with transaction.atomic():
            locked = runner.lock_run(run)
            locked.transition(RunStatus.RUNNING)
            runner.fail_run(locked, "failed for the test", timezone.now())
    request = ApprovalRequest.objects.filter(run=run).first()
    values = {"slug": workflow.slug, "run_id": str(run.id), "approval_id": str(request.pk if request else 0)}
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def state() -> list[Any]:
    """What an operation could change: every run and request with its status, and the number of runs."""
    return [
        sorted(WorkflowRun.objects.values_list("id", "status")),
        sorted(ApprovalRequest.objects.values_list("id", "status")),
    ]


def test_the_matrix_covers_every_operation_of_the_api() -> None:
    schema = ninja_api.get_openapi_schema()
    assert {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops} == set(OPERATIONS)


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_every_operation_answers_each_caller_as_its_permissions_and_scopes_allow(
    caller: str, people: dict[str, User]
) -> None:
    client = client_for(caller, people)
    workflow = gated_workflow()
    may, refused = CALLERS[caller]
    answers = {}
    for method, template in OPERATIONS:
        path = fresh_path(template, workflow)
        before = state()
        if method == "GET":
            response = client.get(path)
        else:
            body: dict[str, Any] | None = None
            if path.endswith("/trigger"):
                body = {"context": {}}
            elif "/approvals/" in path:
                body = {"comment": "matrix"}
            response = client.post(path, body)
        answers[(method, template)] = response.status_code
        if response.status_code in (401, 403):
            assert state() == before, (method, template)  # a refusal changes nothing
        if response.status_code == 401:
            assert response["WWW-Authenticate"].startswith("Bearer"), (method, template)
    expected = {op: allowed if needs in may else refused for op, (needs, allowed) in OPERATIONS.items()}
    assert answers == expected
