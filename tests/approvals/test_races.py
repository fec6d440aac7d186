"""Two operators deciding the same request at the same moment, each in its own PostgreSQL transaction."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection

from approvals import services
from approvals.models import ApprovalDecision, ApprovalRequest
from tests.approvals.conftest import at_gate, node, start
from tests.conftest import finish
from workflows import runner
from workflows.models import RunStatus, RunTransition

pytestmark = pytest.mark.django_db(transaction=True)


def race(req: ApprovalRequest, deciders: list[tuple[Any, str]], hold: float = 0.3) -> dict[str, Any]:
    """Lets each (user, decision) call decide at the same moment; the winner holds its locks for ``hold``s."""
    barrier = threading.Barrier(len(deciders))
    outcomes: dict[str, Any] = {}
    real_release, real_reject = runner.release_gate, runner.reject_run

    def slow(real: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            time.sleep(hold)  # inside the winner's transaction: the others must be waiting on the row lock
            return real(*args, **kwargs)

        return wrapped

    def decide(user: Any, decision: str) -> None:
        try:
            barrier.wait(5)
            outcomes[user.username] = services.decide(
                req.pk, acting_user=user, decision=decision, comment=f"{decision} by {user.username}", channel="api"
            )
        except Exception as exc:
            outcomes[user.username] = exc
        finally:
            connection.close()

    runner.release_gate, runner.reject_run = slow(real_release), slow(real_reject)
    try:
        threads = [threading.Thread(target=decide, args=pair) for pair in deciders]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        runner.release_gate, runner.reject_run = real_release, real_reject
    return outcomes


def test_two_operators_approving_at_once_record_one_decision(make_workflow, operator, second_operator):
    run = start(make_workflow("race", node("gate", required=True), node("after", depends_on=["gate"])))
    req = at_gate(run)
    outcomes = race(req, [(operator, "approve"), (second_operator, "approve")])

    winners = {name: o for name, o in outcomes.items() if isinstance(o, ApprovalDecision)}
    losers = {name: o for name, o in outcomes.items() if not isinstance(o, ApprovalDecision)}
    assert len(winners) == 1 and len(losers) == 1, outcomes
    (winner,) = winners
    (loser,) = losers.values()
    assert isinstance(loser, services.AlreadyDecided)
    assert f"already decided by {winner} at" in str(loser)
    assert ApprovalDecision.objects.filter(request=req).count() == 1
    req.refresh_from_db()
    assert req.decided_by is not None
    assert req.status == ApprovalRequest.Status.APPROVED and req.decided_by.username == winner
    assert RunTransition.objects.filter(run=run, to_status=RunStatus.RUNNING).count() == 1
    assert finish(run).status == RunStatus.SUCCESS


def test_approve_and_reject_at_once_have_exactly_one_effect(make_workflow, operator, second_operator):
    run = start(make_workflow("race-mixed", node("gate", required=True), node("after", depends_on=["gate"])))
    req = at_gate(run)
    outcomes = race(req, [(operator, "approve"), (second_operator, "reject")])

    assert sum(isinstance(o, ApprovalDecision) for o in outcomes.values()) == 1, outcomes
    (loser,) = [o for o in outcomes.values() if not isinstance(o, ApprovalDecision)]
    assert isinstance(loser, services.AlreadyDecided)
    req.refresh_from_db()
    run = finish(run)
    if req.status == ApprovalRequest.Status.APPROVED:
        assert run.status == RunStatus.SUCCESS
        assert "already decided by olivia at" in str(loser)
    else:
        assert req.status == ApprovalRequest.Status.REJECTED
        assert run.status == RunStatus.REJECTED
        assert "already decided by otto at" in str(loser)
    assert ApprovalDecision.objects.filter(request=req).count() == 1
