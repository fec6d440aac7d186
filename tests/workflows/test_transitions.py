import pytest

from workflows.models import InvalidTransition, RunStatus, RunTransition, Workflow, WorkflowRun
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
