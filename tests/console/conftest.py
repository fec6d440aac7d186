"""Runs built directly in the database (fast, any status) and an operator who may act on runs."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from django.utils import timezone

from agents.models import AgentRun
from tests.approvals.conftest import make_workflow, second_operator  # noqa: F401 - gated workflows, a second operator
from tests.browser import real_worker  # noqa: F401 - a worker process for the browser tests
from workflows.models import RunStatus, RunStep, RunTransition, StepStatus, Workflow, WorkflowRun


@pytest.fixture
def run_operator(operator: User) -> User:
    """The conftest operator, with the permission to operate runs (cancel, retry, re-run, trigger)."""
    group = Group.objects.get(name="operators")
    group.permissions.add(Permission.objects.get(codename="change_workflowrun"))
    return User.objects.get(pk=operator.pk)  # fresh: no cached permissions


@pytest.fixture
def operator_client(run_operator: User) -> Client:
    client = Client()
    client.force_login(run_operator)
    return client


@pytest.fixture
def viewer_client(viewer: User) -> Client:
    client = Client()
    client.force_login(viewer)
    return client


@pytest.fixture
def make_run(synced: None) -> Callable[..., WorkflowRun]:
    """A finished-looking run of a synced workflow written directly: steps, attempts and transitions."""

    def make(
        slug: str = "test-failure",
        *,
        status: str = RunStatus.FAILED,
        step_statuses: dict[str, str] | None = None,
        context: dict[str, Any] | None = None,
        trigger: str = "api",
        age: timedelta = timedelta(minutes=5),
    ) -> WorkflowRun:
        workflow = Workflow.objects.get(slug=slug)
        created = timezone.now() - age
        started = created + timedelta(milliseconds=40)
        terminal = status in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.REJECTED)
        run = WorkflowRun.objects.create(
            workflow=workflow,
            workflow_version=workflow.version,
            definition=workflow.snapshot(),
            status=status,
            trigger=trigger,
            context=context or {"note": "made by a test"},
            trace_id=secrets.token_hex(16),
            created_at=created,
            started_at=started,
            finished_at=started + timedelta(seconds=3) if terminal else None,
        )
        moment = started
        for position, node in enumerate(run.definition["nodes"]):
            step_status = (step_statuses or {}).get(node["key"], StepStatus.SUCCESS)
            step = RunStep.objects.create(
                run=run,
                key=node["key"],
                position=position,
                status=step_status,
                attempts=1,
                ready_at=moment,
                started_at=moment + timedelta(milliseconds=20),
                finished_at=moment + timedelta(seconds=1),
                error="boom" if step_status == StepStatus.FAILED else "",
            )
            AgentRun.objects.create(
                run=run,
                step=step,
                attempt=1,
                agent_type=node["agent_type"],
                status=step_status if step_status in (StepStatus.SUCCESS, StepStatus.FAILED) else "CANCELLED",
                input={"step": node["key"]},
                output={"ok": True} if step_status == StepStatus.SUCCESS else None,
                error_type="AgentError" if step_status == StepStatus.FAILED else "",
                error_message="boom" if step_status == StepStatus.FAILED else "",
                span_id=secrets.token_hex(8),
                started_at=moment + timedelta(milliseconds=20),
                finished_at=moment + timedelta(seconds=1),
                duration_seconds=0.98,
            )
            moment += timedelta(seconds=1)
        RunTransition.objects.create(run=run, from_status="", to_status=RunStatus.PENDING, at=created)
        RunTransition.objects.create(run=run, from_status=RunStatus.PENDING, to_status=status, at=started)
        return run

    return make
