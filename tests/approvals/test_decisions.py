"""Deciding a gate through services.decide: resume, reject, quorum, self-approval, permissions, audit."""

from __future__ import annotations

import logging
from unittest import mock

import pytest
from django_tasks_db.models import DBTaskResult

from approvals import services
from approvals.models import ApprovalDecision, ApprovalRequest
from tests.approvals.conftest import at_gate, node, start
from tests.conftest import finish, work
from workflows.models import RunStatus, RunStep, StepStatus

pytestmark = pytest.mark.django_db(transaction=True)


def approve(req, user, comment="ok", channel="api"):
    return services.decide(req, acting_user=user, decision="approve", comment=comment, channel=channel)


def reject(req, user, comment="not now", channel="api"):
    return services.decide(req, acting_user=user, decision="reject", comment=comment, channel=channel)


def test_reaching_the_gate_parks_the_step_and_records_when(synced, operator):
    run = start("scan-approve-notify", context={"target": "db-1"})
    req = at_gate(run)
    step = RunStep.objects.get(run=run, key="notify")
    assert step.status == StepStatus.WAITING_APPROVAL
    assert req.node_key == "notify"
    assert req.requested_at == step.ready_at
    assert req.expires_at is not None and (req.expires_at - req.requested_at).total_seconds() == 3600
    assert RunStep.objects.get(run=run, key="summarise").status == StepStatus.SUCCESS


def test_approval_resumes_the_run_and_downstream_steps_reach_success(synced, operator):
    run = start("scan-approve-notify", context={"target": "db-1"})
    req = at_gate(run)
    row = approve(req, operator, comment="looks right", channel="admin")

    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    assert run.transitions.filter(from_status=RunStatus.WAITING_APPROVAL, to_status=RunStatus.RUNNING).exists()
    assert finish(run).status == RunStatus.SUCCESS
    notify = RunStep.objects.get(run=run, key="notify")
    assert notify.status == StepStatus.SUCCESS
    assert notify.output
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.APPROVED
    assert req.decided_by == operator
    assert req.decision_comment == "looks right"
    assert req.channel == "admin"
    assert req.wait_seconds is not None and req.wait_seconds > 0
    assert req.decided_at is not None
    assert req.wait_seconds == pytest.approx((req.decided_at - req.requested_at).total_seconds())
    assert row.user == operator and row.decision == "approve" and row.wait_seconds == req.wait_seconds


def _queued_for(step: RunStep) -> int:
    return sum(1 for args in DBTaskResult.objects.values_list("args_kwargs", flat=True) if args["args"] == [step.id])


def test_the_step_is_queued_only_with_a_committed_decision(make_workflow, operator):
    run = start(make_workflow("gate-only", node("gate", required=True)))
    req = at_gate(run)
    step = RunStep.objects.get(run=run, key="gate")
    assert _queued_for(step) == 0
    with mock.patch("workflows.runner.settling.settle", side_effect=RuntimeError("boom")), pytest.raises(RuntimeError):
        approve(req, operator)
    req.refresh_from_db()
    step.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING
    assert step.status == StepStatus.WAITING_APPROVAL
    assert not ApprovalDecision.objects.exists()
    assert _queued_for(step) == 0

    approve(req, operator)
    step.refresh_from_db()
    assert step.status == StepStatus.READY
    assert _queued_for(step) == 1


def test_reject_cancels_the_remaining_steps_and_rejects_the_run(make_workflow, operator):
    workflow = make_workflow(
        "reject-me",
        node("first"),
        node("gate", depends_on=["first"], required=True),
        node("after", depends_on=["gate"]),
        node("also-after", depends_on=["gate"]),
    )
    run = start(workflow)
    req = at_gate(run)
    reject(req, operator, comment="wrong target")

    run.refresh_from_db()
    assert run.status == RunStatus.REJECTED
    assert run.error == "step 'gate' rejected by olivia: wrong target"
    statuses = dict(RunStep.objects.filter(run=run).values_list("key", "status"))
    assert statuses == {
        "first": StepStatus.SUCCESS,
        "gate": StepStatus.CANCELLED,
        "after": StepStatus.CANCELLED,
        "also-after": StepStatus.CANCELLED,
    }
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.REJECTED
    assert (req.decided_by, req.decision_comment) == (operator, "wrong target")
    work()  # nothing left to run for it
    assert RunStep.objects.filter(run=run, status=StepStatus.SUCCESS).count() == 1


def test_reject_cancels_other_open_requests_of_the_run(make_workflow, operator):
    run = start(make_workflow("two-gates", node("a", required=True), node("b", required=True)))
    first = at_gate(run, "a")
    second = ApprovalRequest.objects.get(run=run, node_key="b")
    reject(first, operator)
    second.refresh_from_db()
    assert second.status == ApprovalRequest.Status.CANCELLED
    with pytest.raises(services.AlreadyDecided, match="cancelled"):
        approve(second, operator)


def test_a_reject_needs_a_reason(make_workflow, operator):
    run = start(make_workflow("needs-reason", node("gate", required=True)))
    req = at_gate(run)
    for empty in ("", "   "):
        with pytest.raises(services.ReasonRequired, match="reason is required"):
            reject(req, operator, comment=empty)
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING
    assert not req.decisions.exists()


@pytest.mark.parametrize("decide", [approve, reject], ids=["approve", "reject"])
def test_a_comment_with_a_nul_character_is_refused_on_every_channel(make_workflow, operator, decide):
    run = start(make_workflow("nul-comment", node("gate", required=True)))
    req = at_gate(run)
    for channel in ("api", "admin"):
        with pytest.raises(services.InvalidComment, match=r"^comment: NUL character not allowed$") as refused:
            decide(req, operator, comment="bad\x00x", channel=channel)
        assert refused.value.status_code == 422
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING and not req.decisions.exists()
    decide(req, operator, comment="bad x")
    req.refresh_from_db()
    assert req.decision_comment == "bad x"


def test_who_may_decide_is_checked_before_the_missing_reason(make_workflow, viewer, outsider):
    req = at_gate(start(make_workflow("perm-first", node("gate", required=True))))
    with pytest.raises(services.NotPermitted, match="victor lacks the permission"):
        reject(req, viewer, comment="")
    with pytest.raises(services.NotPermitted, match="oscar lacks the permission"):
        reject(req, outsider, comment="bad\x00x")
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING and not req.decisions.exists()


def test_a_decided_or_expired_request_is_409_before_the_missing_reason(
    make_workflow, operator, second_operator, third_operator
):
    workflow = make_workflow("state-first", node("gate", required=True, required_approvals=2, timeout_seconds=600))
    req = at_gate(start(workflow))
    approve(req, operator)
    with pytest.raises(services.AlreadyDecided, match="olivia already decided"):
        reject(req, operator, comment="")  # this operator's vote is already in
    reject(req, second_operator, comment="no")
    with pytest.raises(services.AlreadyDecided, match="already decided by otto at"):
        reject(req, third_operator, comment="")

    expiring = at_gate(start(workflow))
    ApprovalRequest.objects.filter(id=expiring.id).update(expires_at=expiring.requested_at)
    with pytest.raises(services.AlreadyDecided, match=f"approval request {expiring.pk} expired at"):
        reject(expiring, operator, comment="")
    expiring.refresh_from_db()
    assert expiring.status == ApprovalRequest.Status.EXPIRED and not expiring.decisions.exists()


def test_quorum_needs_n_distinct_approvers(make_workflow, operator, second_operator, third_operator):
    run = start(make_workflow("quorum", node("gate", required=True, required_approvals=2)))
    req = at_gate(run)

    approve(req, operator)
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING_APPROVAL

    with pytest.raises(services.AlreadyDecided, match=r"olivia already decided .* each operator counts once"):
        approve(req, operator)
    assert req.decisions.count() == 1

    approve(req, second_operator, comment="second")
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.APPROVED
    assert req.decided_by == second_operator
    assert finish(run).status == RunStatus.SUCCESS

    with pytest.raises(services.AlreadyDecided, match="already decided by otto at"):
        approve(req, third_operator)
    assert list(req.decisions.values_list("user__username", flat=True)) == ["olivia", "otto"]


def test_one_reject_decides_even_after_partial_approvals(make_workflow, operator, second_operator):
    run = start(make_workflow("quorum-veto", node("gate", required=True, required_approvals=2)))
    req = at_gate(run)
    approve(req, operator)
    reject(req, second_operator, comment="no")
    run.refresh_from_db()
    assert run.status == RunStatus.REJECTED
    assert list(req.decisions.values_list("decision", flat=True)) == ["approve", "reject"]


def test_whoever_triggered_the_run_cannot_approve_it(make_workflow, operator, second_operator):
    run = start(make_workflow("self", node("gate", required=True)), user=operator)
    req = at_gate(run)
    with pytest.raises(services.NotPermitted, match="olivia triggered this run and may not approve it"):
        approve(req, operator)
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING and not req.decisions.exists()
    approve(req, second_operator)
    assert finish(run).status == RunStatus.SUCCESS


def test_self_approval_when_the_gate_allows_it(make_workflow, operator):
    run = start(make_workflow("self-ok", node("gate", required=True, allow_self_approval=True)), user=operator)
    approve(at_gate(run), operator)
    assert finish(run).status == RunStatus.SUCCESS


def test_whoever_triggered_the_run_may_still_reject_it(make_workflow, operator):
    run = start(make_workflow("self-reject", node("gate", required=True)), user=operator)
    reject(at_gate(run), operator, comment="changed my mind")
    run.refresh_from_db()
    assert run.status == RunStatus.REJECTED


def test_users_without_the_decide_permission_are_refused(make_workflow, viewer, outsider):
    run = start(make_workflow("perm", node("gate", required=True)))
    req = at_gate(run)
    with pytest.raises(services.NotPermitted, match="victor lacks the permission"):
        approve(req, viewer)
    with pytest.raises(services.NotPermitted, match="oscar lacks the permission"):
        reject(req, outsider)
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING and not req.decisions.exists()


def test_only_the_configured_groups_and_users_may_decide(make_workflow, operator, second_operator, lead):
    workflow = make_workflow("leads-only", node("gate", required=True, groups=["leads"], users=["otto"]))
    run = start(workflow)
    req = at_gate(run)
    with pytest.raises(services.NotPermitted, match="only group leads, user otto may decide"):
        approve(req, operator)
    assert services.may_decide(lead, req) and services.may_decide(second_operator, req)
    assert not services.may_decide(operator, req)
    approve(req, lead)
    assert finish(run).status == RunStatus.SUCCESS


def test_a_decided_request_says_who_decided_and_when(make_workflow, operator, second_operator):
    run = start(make_workflow("twice", node("gate", required=True)))
    req = at_gate(run)
    approve(req, operator)
    req.refresh_from_db()
    with pytest.raises(services.AlreadyDecided) as refused:
        reject(req, second_operator)
    assert req.decided_at is not None
    when = req.decided_at.isoformat(timespec="seconds")
    assert str(refused.value) == f"approval request {req.pk} was already decided by olivia at {when} (approved)"
    assert refused.value.details == {
        "status": "APPROVED",
        "decided_by": "olivia",
        "decided_at": req.decided_at.isoformat(),
    }
    run.refresh_from_db()
    assert run.status != RunStatus.REJECTED
    assert req.decisions.count() == 1


def test_independent_branches_go_on_while_one_waits(make_workflow, operator):
    workflow = make_workflow(
        "branches",
        node("gated", required=True),
        node("after-gate", depends_on=["gated"]),
        node("free"),
        node("after-free", depends_on=["free"]),
    )
    run = start(workflow)
    req = at_gate(run, "gated")

    def free_branch_done() -> bool:
        return RunStep.objects.filter(run=run, key__in=["free", "after-free"], status=StepStatus.SUCCESS).count() == 2

    work(free_branch_done)
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING_APPROVAL
    assert RunStep.objects.get(run=run, key="after-gate").status == StepStatus.PENDING
    approve(req, operator)
    assert finish(run).status == RunStatus.SUCCESS
    assert set(RunStep.objects.filter(run=run).values_list("status", flat=True)) == {StepStatus.SUCCESS}


def test_every_decision_is_a_structured_log_event_and_reported_after_commit(make_workflow, operator, caplog):
    run = start(make_workflow("logged", node("gate", required=True)))
    req = at_gate(run)
    caplog.set_level(logging.INFO, logger="approvals")
    with mock.patch("approvals.events.approval_decided") as decided:
        approve(req, operator, comment="fine", channel="admin")
    (record,) = [r for r in caplog.records if getattr(r, "event", "") == "approval.decision"]
    assert record.name == "approvals"
    assert (record.decision, record.user, record.channel, record.request_status) == (
        "approve",
        "olivia",
        "admin",
        "APPROVED",
    )
    assert record.run_id == str(run.id) and record.step == "gate" and record.wait_seconds > 0
    req.refresh_from_db()
    decided.assert_called_once()
    args = decided.call_args.args
    assert args[1:4] == ("approved", "olivia", "admin")
    assert args[0].pk == req.pk and args[4] == pytest.approx(req.wait_seconds)


def test_opening_a_gate_reports_the_request(make_workflow):
    with mock.patch("approvals.events.approval_requested") as requested:
        run = start(make_workflow("reported", node("gate", required=True)))
        req = at_gate(run)
    requested.assert_called_once()
    assert requested.call_args.args[0].pk == req.pk
