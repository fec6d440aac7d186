"""Gated workflows built inline, and helpers to bring a run to its gate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User

from agents.models import Agent
from approvals.models import ApprovalRequest
from tests.conftest import work
from workflows.models import RunStatus, Workflow, WorkflowNode, WorkflowRun
from workflows.services import trigger_workflow


def node(key: str, *, depends_on: list[str] | None = None, inputs: Any = None, **gate: Any) -> dict[str, Any]:
    """An echo step; any keyword is an approval setting and makes the step gated."""
    return {"key": key, "depends_on": depends_on or [], "inputs": inputs or {"step": key}, "gate": gate}


@pytest.fixture
def make_workflow(synced: None) -> Callable[..., Workflow]:
    def make(slug: str, *nodes: dict[str, Any]) -> Workflow:
        echo = Agent.objects.get(slug="echo")
        workflow = Workflow.objects.create(slug=slug, name=slug.replace("-", " ").title())
        for position, spec in enumerate(nodes):
            gate = spec["gate"]
            WorkflowNode.objects.create(
                workflow=workflow,
                key=spec["key"],
                position=position,
                agent=echo,
                inputs=spec["inputs"],
                depends_on=spec["depends_on"],
                requires_approval=bool(gate),
                required_approvals=gate.get("required_approvals", 1),
                approver_groups=gate.get("groups", []),
                approver_users=gate.get("users", []),
                approval_timeout_seconds=gate.get("timeout_seconds"),
                approval_timeout_action=gate.get("timeout_action", "reject"),
                allow_self_approval=gate.get("allow_self_approval", False),
            )
        return workflow

    return make


def start(workflow: Workflow | str, *, user: User | None = None, context: dict[str, Any] | None = None) -> WorkflowRun:
    if isinstance(workflow, str):
        workflow = Workflow.objects.get(slug=workflow)
    run, _ = trigger_workflow(workflow, context=context or {}, user=user)
    return run


def at_gate(run: WorkflowRun, key: str | None = None) -> ApprovalRequest:
    """Works the run until it waits for approval; returns its (first) pending request."""

    def waiting() -> bool:
        run.refresh_from_db()
        return run.status == RunStatus.WAITING_APPROVAL

    work(waiting)
    pending = ApprovalRequest.objects.filter(run=run, status=ApprovalRequest.Status.PENDING)
    if key:
        pending = pending.filter(node_key=key)
    return pending.get()


@pytest.fixture
def second_operator(operator: User) -> User:
    user = User.objects.create_user("otto", password="operator-pass-2", is_staff=True)
    user.groups.add(Group.objects.get(name="operators"))
    return user


@pytest.fixture
def third_operator(operator: User) -> User:
    user = User.objects.create_user("opal", password="operator-pass-3", is_staff=True)
    user.groups.add(Group.objects.get(name="operators"))
    return user


@pytest.fixture
def lead(db: None) -> User:
    """Holds the decide permission directly and belongs to the "leads" group."""
    user = User.objects.create_user("lena", password="lead-pass-1", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    user.groups.add(Group.objects.get_or_create(name="leads")[0])
    return user
