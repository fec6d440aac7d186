"""Expiry from the workers' maintenance loop, and cancelling a run closes its open requests."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalRequest
from tests.approvals.conftest import at_gate, node, start
from tests.conftest import finish
from workflows import runner
from workflows.models import RunStatus, RunStep, StepStatus

pytestmark = pytest.mark.django_db(transaction=True)


def overdue(req: ApprovalRequest) -> ApprovalRequest:
    ApprovalRequest.objects.filter(id=req.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    req.refresh_from_db()
    return req


def test_an_expired_request_rejects_the_run_by_default(make_workflow):
    run = start(
        make_workflow("expiring", node("gate", required=True, timeout_seconds=600), node("x", depends_on=["gate"]))
    )
    req = overdue(at_gate(run))

    assert runner.maintenance()["expired_approvals"] == 1
    req.refresh_from_db()
    run.refresh_from_db()
    assert req.status == ApprovalRequest.Status.EXPIRED
    assert req.decided_by is None and req.channel == "timeout"
    assert req.decided_at is not None
    assert req.wait_seconds == pytest.approx((req.decided_at - req.requested_at).total_seconds())
    assert run.status == RunStatus.REJECTED
    assert run.error.startswith("approval expired")
    assert run.transitions.get(to_status=RunStatus.REJECTED).actor == "timeout"
    assert set(RunStep.objects.filter(run=run).values_list("status", flat=True)) == {StepStatus.CANCELLED}
    assert services.expire_requests() == 0


def test_a_request_before_its_expiry_is_left_alone(make_workflow):
    run = start(make_workflow("not-yet", node("gate", required=True, timeout_seconds=600)))
    req = at_gate(run)
    assert services.expire_requests() == 0
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.PENDING


def test_an_expired_request_with_approve_action_releases_the_step(make_workflow):
    workflow = make_workflow(
        "auto-approve",
        node("gate", required=True, timeout_seconds=600, timeout_action="approve"),
        node("after", depends_on=["gate"]),
    )
    run = start(workflow)
    req = overdue(at_gate(run))
    assert services.expire_requests() == 1
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.EXPIRED
    assert "timeout action: approve" in req.decision_comment
    assert finish(run).status == RunStatus.SUCCESS


def test_deciding_after_the_expiry_applies_the_timeout_and_says_so(make_workflow, operator):
    run = start(make_workflow("late", node("gate", required=True, timeout_seconds=600)))
    req = overdue(at_gate(run))
    with pytest.raises(services.AlreadyDecided, match=f"approval request {req.pk} expired at"):
        services.decide(req, acting_user=operator, decision="approve", comment="", channel="api")
    req.refresh_from_db()
    run.refresh_from_db()
    assert req.status == ApprovalRequest.Status.EXPIRED
    assert not req.decisions.exists()
    assert run.status == RunStatus.REJECTED


def test_many_workers_expire_a_request_exactly_once(make_workflow):
    run = start(make_workflow("busy", node("gate", required=True, timeout_seconds=600)))
    req = overdue(at_gate(run))
    barrier = threading.Barrier(4)
    results: list[int] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(services.expire_requests())
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    # A worker that found the run locked skips it; the request is expired exactly once.
    assert sum(results) == 1, results
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.EXPIRED
    run.refresh_from_db()
    assert run.status == RunStatus.REJECTED
    assert run.transitions.filter(to_status=RunStatus.REJECTED).count() == 1


def test_cancelling_a_run_cancels_its_open_requests(make_workflow, operator):
    run = start(make_workflow("cancel-me", node("gate", required=True)))
    req = at_gate(run)
    runner.cancel_run(run, reason="not needed", actor="olivia")
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.CANCELLED
    assert req.decided_at is not None
    with pytest.raises(services.AlreadyDecided, match="was cancelled at"):
        services.decide(req, acting_user=operator, decision="approve", comment="", channel="admin")
    assert not req.decisions.exists()
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
