import contextlib
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from agents.models import Agent
from approvals.models import ApprovalRequest
from approvals.services import ApprovalError, decide, expire_open_requests
from tests.alerts.conftest import TOKEN, fixture, post
from tests.conftest import ApiClient
from workflows import runner
from workflows.management.commands.worker import Worker
from workflows.models import (
    _RUN_MOVES,
    OPEN_STEP_STATUSES,
    TERMINAL_RUN_STATUSES,
    InvalidTransition,
    RunStatus,
    RunTransition,
    StepStatus,
    Workflow,
    WorkflowNode,
    WorkflowRun,
)
from workflows.services import trigger_workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(synced: None) -> WorkflowRun:
    run, _ = trigger_workflow(Workflow.objects.get(slug="scan-and-notify"), context={})
    return run


def test_a_new_run_is_pending_with_a_creation_row(run: WorkflowRun) -> None:
    assert run.status == RunStatus.PENDING
    assert list(run.transitions.values_list("from_status", "to_status")) == [("", "PENDING")]


def test_it_records_every_status_change(run: WorkflowRun) -> None:
    run.transition(RunStatus.RUNNING, reason="go", actor="tester")
    run.transition(RunStatus.FAILED, reason="boom")
    rows = list(RunTransition.objects.filter(run=run).values_list("from_status", "to_status", "reason"))
    assert rows == [("", "PENDING", ""), ("PENDING", "RUNNING", "go"), ("RUNNING", "FAILED", "boom")]
    run.refresh_from_db()
    assert run.started_at is not None and run.finished_at is not None
    assert run.error == "boom"


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ([], RunStatus.SUCCESS),
        ([RunStatus.RUNNING, RunStatus.SUCCESS], RunStatus.RUNNING),
        ([RunStatus.CANCELLED], RunStatus.RUNNING),
        ([RunStatus.RUNNING, RunStatus.REJECTED], RunStatus.RUNNING),
        ([RunStatus.RUNNING, RunStatus.FAILED], RunStatus.SUCCESS),
    ],
)
def test_it_refuses_invalid_moves(run: WorkflowRun, path: list[str], refused: str) -> None:
    for status in path:
        run.transition(status)
    before = run.transitions.count()
    with pytest.raises(InvalidTransition, match=f"cannot move from {run.status} to {refused}"):
        run.transition(refused)
    assert run.transitions.count() == before
    run.refresh_from_db()
    assert run.status == (path[-1] if path else RunStatus.PENDING)


def test_a_failed_run_may_be_retried(run: WorkflowRun) -> None:
    run.transition(RunStatus.RUNNING)
    run.transition(RunStatus.FAILED, reason="boom")
    run.transition(RunStatus.RUNNING, reason="retry")
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.finished_at is None and run.error == ""


# --- Every move the runner can ask for ---------------------------------------------------------------------


def gated_and_free_roots(slug: str = "gated-and-free", **gate: Any) -> Workflow:
    """A gated root step beside an ungated one: the run stays PENDING, its gate open, until a worker starts."""
    echo = Agent.objects.get(slug="echo")
    workflow = Workflow.objects.create(slug=slug, name=slug)
    WorkflowNode.objects.create(workflow=workflow, key="gate", agent=echo, requires_approval=True, **gate)
    WorkflowNode.objects.create(workflow=workflow, key="free", agent=echo, position=1)
    WorkflowNode.objects.create(workflow=workflow, key="after", agent=echo, position=2, depends_on=["gate", "free"])
    return workflow


@pytest.fixture
def pending_at_gate(synced: None) -> tuple[WorkflowRun, ApprovalRequest]:
    run, _ = trigger_workflow(gated_and_free_roots(approval_timeout_seconds=600), context={})
    run.refresh_from_db()
    request = ApprovalRequest.objects.get(run=run, status=ApprovalRequest.Status.PENDING)
    assert run.status == RunStatus.PENDING
    return run, request


def assert_rejected(run: WorkflowRun) -> None:
    run.refresh_from_db()
    assert run.status == RunStatus.REJECTED, run.status
    assert not run.steps.filter(status__in=OPEN_STEP_STATUSES).exists()
    assert list(run.transitions.values_list("from_status", "to_status"))[-1] == ("PENDING", "REJECTED")


def test_a_reject_before_any_step_started_rejects_the_pending_run(
    pending_at_gate: tuple[WorkflowRun, ApprovalRequest], operator: User
) -> None:
    run, request = pending_at_gate
    decide(request.id, acting_user=operator, decision="reject", comment="not now", channel="admin")
    assert_rejected(run)


def test_an_expiry_before_any_step_started_rejects_the_pending_run_in_maintenance(
    pending_at_gate: tuple[WorkflowRun, ApprovalRequest],
) -> None:
    run, request = pending_at_gate
    ApprovalRequest.objects.filter(id=request.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert runner.maintenance()["expired_approvals"] == 1
    assert_rejected(run)


def test_a_resolved_alert_before_any_step_started_rejects_the_pending_run(
    pending_at_gate: tuple[WorkflowRun, ApprovalRequest],
) -> None:
    run, _ = pending_at_gate
    assert expire_open_requests(run, reason="alert resolved", actor="alert") == 1
    assert_rejected(run)


def test_a_reject_over_the_api_before_any_step_started_answers_200(
    pending_at_gate: tuple[WorkflowRun, ApprovalRequest], api: ApiClient
) -> None:
    run, request = pending_at_gate
    response = api.post(f"/api/approvals/{request.id}/reject", {"comment": "not now"})
    assert response.status_code == 200, response.content
    assert_rejected(run)


def test_a_resolved_alert_before_any_step_started_answers_200_and_rejects_the_pending_run(
    synced: None, settings: Any
) -> None:
    settings.WEBHOOK_TOKEN, settings.WEBHOOK_HMAC_SECRET = TOKEN, ""
    settings.ALERT_WORKFLOW_ALLOWLIST = ["gated-and-free"]
    gated_and_free_roots(approval_timeout_seconds=600)

    def alert(name: str) -> dict[str, Any]:
        payload = fixture(name)
        payload["alerts"] = payload["alerts"][:1]
        payload["alerts"][0]["labels"]["workflow"] = payload["commonLabels"]["workflow"] = "gated-and-free"
        return payload

    firing = post(alert("grafana_firing"))
    assert firing.status_code == 200, firing.content
    run = WorkflowRun.objects.get(id=firing.json()["workflowRunIds"][0])
    assert run.status == RunStatus.PENDING and ApprovalRequest.objects.filter(run=run, status="PENDING").exists()
    resolved = post(alert("grafana_resolved"))
    assert resolved.status_code == 200, resolved.content
    assert_rejected(run)


def test_a_reject_in_the_admin_before_any_step_started_is_not_a_server_error(
    pending_at_gate: tuple[WorkflowRun, ApprovalRequest], operator: User
) -> None:
    run, request = pending_at_gate
    client = Client()
    client.force_login(operator)
    url = reverse("admin:approvals_approvalrequest_decide", args=[request.id])
    response = client.post(url, {"decision": "reject", "comment": "not now"})
    assert response.status_code == 302
    assert_rejected(run)


# --- The state machine under random orders of gates, decisions, expiries, cancels and retries -----------

SHAPES: dict[str, list[dict[str, Any]]] = {
    # (key, agent, depends_on, gate settings or None)
    "gated-and-free-roots": [
        {"key": "gate", "gate": {}},
        {"key": "free"},
        {"key": "after", "depends_on": ["gate", "free"]},
    ],
    "gate-in-the-middle": [
        {"key": "a"},
        {"key": "gate", "depends_on": ["a"], "gate": {}},
        {"key": "c", "depends_on": ["gate"]},
    ],
    "quorum-that-approves-on-expiry": [
        {"key": "gate", "gate": {"required_approvals": 2, "approval_timeout_action": "approve"}},
        {"key": "after", "depends_on": ["gate"]},
    ],
    "a-failing-branch-beside-a-gate": [
        {"key": "gate", "gate": {}},
        {"key": "boom", "agent": "always-fails"},
        {"key": "after", "depends_on": ["gate"]},
    ],
    "two-gates": [
        {"key": "g1", "gate": {}},
        {"key": "g2", "gate": {"approval_timeout_action": "approve"}},
        {"key": "join", "depends_on": ["g1", "g2"]},
    ],
}


def shape_workflow(shape: str) -> Workflow:
    workflow, created = Workflow.objects.get_or_create(slug=f"orders-{shape}", defaults={"name": shape})
    if created:
        for position, spec in enumerate(SHAPES[shape]):
            gate = spec.get("gate")
            WorkflowNode.objects.create(
                workflow=workflow,
                key=spec["key"],
                position=position,
                agent=Agent.objects.get(slug=spec.get("agent", "echo")),
                depends_on=spec.get("depends_on", []),
                requires_approval=gate is not None,
                approval_timeout_seconds=600 if gate is not None else None,
                **(gate or {}),
            )
    return workflow


class RunOrders(RuleBasedStateMachine):
    """Drives real runs through random orders of what operators, workers, timers and alerts do to them.

    Whatever the order, no action raises InvalidTransition, every run's status agrees with its steps and
    requests after each action, and at the end every run can be brought to a terminal status.
    """

    def __init__(self) -> None:
        super().__init__()
        self.run_ids: list[str] = []
        self.worker = Worker.draining("orders", interval=0.0)
        self.operators = list(User.objects.filter(username__in=["olivia", "otto"]).order_by("username"))

    def _run(self, index: int) -> WorkflowRun:
        return WorkflowRun.objects.get(id=self.run_ids[index % len(self.run_ids)])

    def _pending(self, run: WorkflowRun) -> list[ApprovalRequest]:
        return list(ApprovalRequest.objects.filter(run=run, status=ApprovalRequest.Status.PENDING).order_by("id"))

    @rule(shape=st.sampled_from(sorted(SHAPES)))
    def trigger(self, shape: str) -> None:
        run, _ = trigger_workflow(shape_workflow(shape), context={})
        self.run_ids.append(str(run.id))

    @rule(steps=st.integers(min_value=1, max_value=3))
    def a_worker_runs_queued_steps(self, steps: int) -> None:
        for _ in range(steps):
            task = self.worker.next_task()
            if task is None:
                return
            self.worker.run_task(task)

    @precondition(lambda self: self.run_ids)
    @rule(index=st.integers(min_value=0), decision=st.sampled_from(["approve", "reject"]), who=st.integers(0, 1))
    def an_operator_decides(self, index: int, decision: str, who: int) -> None:
        for request in self._pending(self._run(index))[:1]:
            with contextlib.suppress(ApprovalError):  # e.g. the same operator voting twice
                decide(request.id, acting_user=self.operators[who], decision=decision, comment="why", channel="api")

    @precondition(lambda self: self.run_ids)
    @rule(index=st.integers(min_value=0))
    def a_gate_times_out(self, index: int) -> None:
        pending = self._pending(self._run(index))[:1]
        ApprovalRequest.objects.filter(id__in=[r.id for r in pending]).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
        runner.maintenance()

    @precondition(lambda self: self.run_ids)
    @rule(index=st.integers(min_value=0))
    def the_alert_resolves(self, index: int) -> None:
        expire_open_requests(self._run(index), reason="alert resolved", actor="alert")

    @precondition(lambda self: self.run_ids)
    @rule(index=st.integers(min_value=0))
    def an_operator_cancels(self, index: int) -> None:
        run = self._run(index)
        if not run.is_terminal:
            runner.cancel_run(run, reason="cancelled", actor="olivia")

    @precondition(lambda self: self.run_ids)
    @rule(index=st.integers(min_value=0))
    def an_operator_retries(self, index: int) -> None:
        run = self._run(index)
        if run.status == RunStatus.FAILED:
            runner.retry_run(run, actor="olivia")

    @invariant()
    def status_agrees_with_steps_and_requests(self) -> None:
        for run in WorkflowRun.objects.filter(id__in=self.run_ids):
            steps = set(run.steps.values_list("status", flat=True))
            pending = ApprovalRequest.objects.filter(run=run, status=ApprovalRequest.Status.PENDING).exists()
            if run.is_terminal:
                assert not steps & set(OPEN_STEP_STATUSES), (run.status, steps)
                assert not pending, run.status
            else:
                assert steps & set(OPEN_STEP_STATUSES), (run.status, steps)
            if run.status == RunStatus.WAITING_APPROVAL:
                assert pending and not steps & {StepStatus.READY, StepStatus.RUNNING}, steps
            moves = run.transitions.values_list("from_status", "to_status")
            assert all(not a or b in _RUN_MOVES[a] for a, b in moves), list(moves)

    def teardown(self) -> None:
        try:
            self._everything_can_finish()
        finally:
            # Each example starts from a database without the runs of the last one.
            WorkflowRun.objects.filter(id__in=self.run_ids).delete()
            DBTaskResult.objects.all().delete()

    def _everything_can_finish(self) -> None:
        # Nothing is left stuck: approving what waits and working what is queued ends every run.
        for _ in range(20):
            runs = list(WorkflowRun.objects.filter(id__in=self.run_ids).exclude(status__in=TERMINAL_RUN_STATUSES))
            if not runs:
                return
            for run in runs:
                for request in self._pending(run):
                    for operator in self.operators:
                        with contextlib.suppress(ApprovalError):
                            decide(request.id, acting_user=operator, decision="approve", channel="api")
            while (task := self.worker.next_task()) is not None:
                self.worker.run_task(task)
        raise AssertionError(f"runs left in progress: {runs}")


def test_random_orders_of_gates_decisions_expiries_and_cancels_never_hit_an_invalid_move(
    synced: None, operator: User
) -> None:
    User.objects.create_user("otto", is_staff=True).groups.add(*operator.groups.all())
    run_state_machine_as_test(
        RunOrders, settings=settings(max_examples=25, stateful_step_count=10, deadline=None, derandomize=True)
    )
