"""A server's Retry-After that does not fit in the step's timeout decides when the step's next attempt runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agents.models import AgentRun
from tests.alerts.conftest import Loopback
from tests.conftest import work
from workflows.loader import sync
from workflows.models import RunStep, StepStatus, Workflow, WorkflowRun
from workflows.services import trigger_workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    server = Loopback()
    yield server
    server.stop()


def http_workflow(tmp_path: Path, url: str, *, backoff: float) -> Workflow:
    definition = {
        "agents": [{"slug": "rate-limited", "type": "http", "config": {"url": url, "retries": 2}}],
        "workflow": {
            "slug": "rate-limited",
            "name": "rate-limited",
            "nodes": [
                {
                    "key": "call",
                    "agent": "rate-limited",
                    "timeout_seconds": 5,
                    "retry": {"max_attempts": 3, "backoff_seconds": backoff, "jitter": 0},
                }
            ],
        },
    }
    path = tmp_path / "rate-limited.yaml"
    path.write_text(yaml.safe_dump(definition))
    sync(path)
    return Workflow.objects.get(slug="rate-limited")


def first_failure(run: WorkflowRun) -> tuple[AgentRun, float]:
    """Works until the first attempt has failed; returns that attempt and the delay before the next one."""
    step = RunStep.objects.get(run=run, key="call")

    def retry_scheduled() -> bool:
        step.refresh_from_db()
        return step.attempts == 1 and step.status == StepStatus.READY

    work(retry_scheduled)
    attempt = AgentRun.objects.get(step=step, attempt=1)
    assert attempt.status == AgentRun.Status.FAILED and attempt.finished_at is not None
    assert step.run_after is not None
    return attempt, (step.run_after - attempt.finished_at).total_seconds()


def test_the_next_attempt_waits_for_a_retry_after_longer_than_the_backoff(tmp_path: Path, loopback: Loopback) -> None:
    loopback.answer(429, b"slow down", Retry_After="600")
    run, _ = trigger_workflow(http_workflow(tmp_path, loopback.url("/limited"), backoff=1), context={})
    attempt, delay = first_failure(run)
    # One request: 600 s do not fit in the 5 s step timeout, so the attempt failed at once ...
    assert len(loopback.received) == 1
    assert "retry after 600s, past the step deadline" in attempt.error_message
    # ... and the step comes back when the server asked, not after the node's 1 s backoff.
    assert 600 <= delay < 601


def test_the_backoff_wins_when_it_is_longer(tmp_path: Path, loopback: Loopback) -> None:
    loopback.answer(503, b"busy", Retry_After="30")
    run, _ = trigger_workflow(http_workflow(tmp_path, loopback.url("/busy"), backoff=120), context={})
    _, delay = first_failure(run)
    assert 120 <= delay < 121


def test_a_retry_after_is_not_stretched_past_an_hour(tmp_path: Path, loopback: Loopback) -> None:
    loopback.answer(429, b"come back tomorrow", Retry_After="86400")
    run, _ = trigger_workflow(http_workflow(tmp_path, loopback.url("/limited"), backoff=1), context={})
    _, delay = first_failure(run)
    assert 3600 <= delay < 3601


def test_a_failure_without_retry_after_keeps_the_backoff(tmp_path: Path, loopback: Loopback) -> None:
    for _ in range(3):
        loopback.answer(500, b"broken")
    run, _ = trigger_workflow(http_workflow(tmp_path, loopback.url("/broken"), backoff=7), context={})
    attempt, delay = first_failure(run)
    assert len(loopback.received) == 3 and "answered 500" in attempt.error_message
    assert 7 <= delay < 8
