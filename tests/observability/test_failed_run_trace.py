"""A run that fails, seen over the wire: its workflow.execute span carries the failure as an ERROR status and
an exception event, as the attempt that failed it does."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.observability.conftest import Service, Tokens
from tests.observability.receiver import Span

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

ERROR = 2  # OTLP status code


@dataclass
class Failed:
    run: dict[str, Any]
    workflow: Span
    attempt: Span


@pytest.fixture(scope="module")
def failed(service: Service, committed: Tokens) -> Iterator[Failed]:
    run = service.run(committed.trigger, "doomed")
    assert run["status"] == "FAILED", run

    def spans() -> tuple[Span, Span] | None:
        got = service.receiver.spans(run["trace_id"])
        workflow = [s for s in got if s.name == "workflow.execute"]
        attempt = [s for s in got if s.name == "agent.execute" and s.attributes["workflow.step.key"] == "fill-disk"]
        return (workflow[0], attempt[0]) if workflow and attempt else None

    workflow, attempt = service.receiver.wait_for("the failed run's spans", spans)
    yield Failed(run, workflow, attempt)


def test_the_failed_run_has_error_status_and_an_exception_event(failed: Failed) -> None:
    assert failed.run["error"] == "step 'fill-disk' failed after 1 attempt: AgentError: no space left on device"
    assert failed.workflow.attributes["workflow.status"] == "FAILED"
    assert failed.workflow.status_code == ERROR
    events = [attrs for name, attrs in failed.workflow.events if name == "exception"]
    assert events == [{"exception.type": "AgentError", "exception.message": failed.run["error"]}]


def test_the_run_and_the_attempt_that_failed_it_name_the_same_error_type(failed: Failed) -> None:
    (run_event,) = [attrs for name, attrs in failed.workflow.events if name == "exception"]
    (attempt_event,) = [attrs for name, attrs in failed.attempt.events if name == "exception"]
    assert failed.attempt.status_code == ERROR
    assert attempt_event["exception.type"] == run_event["exception.type"]
    assert attempt_event["exception.message"] == "no space left on device"


def test_a_successful_run_has_no_exception_event(service: Service, committed: Tokens) -> None:
    run = service.run(committed.trigger, "quick")
    assert run["status"] == "SUCCESS", run
    workflow = service.receiver.wait_for(
        "the successful run's workflow.execute",
        lambda: [s for s in service.receiver.spans(run["trace_id"]) if s.name == "workflow.execute"],
    )[0]
    assert workflow.status_code != ERROR
    assert workflow.events == []
