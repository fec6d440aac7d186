"""The core's port (workflows.events): guards veto, observers never raise, required guards are checked at start."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from approvals import services as approvals
from tests.workflows.helpers import define
from workflows import events
from workflows.apps import check_port_listeners
from workflows.models import InvalidTransition, RunStatus, RunStep, StepStatus, WorkflowRun
from workflows.services import trigger_workflow

AGENTS = [{"slug": "p-echo", "type": "echo"}]


def _probe(value: int) -> None: ...


def test_a_guard_that_raises_vetoes_and_an_observer_that_raises_is_only_logged(caplog) -> None:
    event = events.event("probe", _probe)
    seen: list[int] = []

    def broken(value: int) -> None:
        raise RuntimeError("observer bug")

    def record(value: int) -> None:
        seen.append(value)

    event.observe(broken)
    event.observe(record)
    with caplog.at_level(logging.ERROR, logger="workflows.events"):
        event(1)
    assert seen == [1]
    assert "listener" in caplog.text and "probe" in caplog.text

    def veto(value: int) -> None:
        raise ValueError("no")

    event.connect(veto)
    with pytest.raises(ValueError, match="no"):
        event(2)
    assert seen == [1]  # observers run after the guards, and not when a guard vetoed


def test_the_approvals_app_guards_the_events_that_need_it() -> None:
    assert approvals.open_gate in events.gate_opened.guards
    assert approvals.cancel_open_requests in events.run_closing.guards
    assert events.missing_listeners() == []
    assert check_port_listeners() == []
    events.require_listeners()


def test_a_missing_required_guard_fails_the_check_and_the_start() -> None:
    events.gate_opened.disconnect(approvals.open_gate)
    try:
        (error,) = check_port_listeners()
        assert error.id == "workflows.E001" and "gate_opened" in error.msg and "approvals" in error.msg
        with pytest.raises(ImproperlyConfigured, match="gate_opened"):
            events.require_listeners()
    finally:
        events.gate_opened.connect(approvals.open_gate)


@pytest.mark.django_db
def test_a_vetoing_guard_rolls_the_gate_back_with_the_trigger(tmp_path: Path) -> None:
    wf = define(tmp_path, "vetoed", [{"key": "g", "agent": "p-echo", "approval": {"required": True}}], AGENTS)

    def refuse(run: WorkflowRun, step: RunStep, node: dict[str, Any], now: datetime) -> None:
        raise RuntimeError("gate refused")

    events.gate_opened.connect(refuse)
    try:
        with pytest.raises(RuntimeError, match="gate refused"):
            trigger_workflow(wf, context={})
    finally:
        events.gate_opened.disconnect(refuse)
    assert not WorkflowRun.objects.filter(workflow=wf).exists()


@pytest.mark.django_db
def test_a_step_moves_only_as_the_move_table_allows(tmp_path: Path) -> None:
    nodes: list[dict[str, Any]] = [
        {"key": "a", "agent": "p-echo"},
        {"key": "b", "agent": "p-echo", "depends_on": ["a"]},
    ]
    wf = define(tmp_path, "moves", nodes, AGENTS)
    run, _ = trigger_workflow(wf, context={})
    a, b = run.steps.order_by("position")
    assert (a.status, b.status) == (StepStatus.READY, StepStatus.PENDING)
    with pytest.raises(InvalidTransition, match="READY to SUCCESS"):
        a.move(StepStatus.SUCCESS)
    assert a.move(StepStatus.RUNNING, worker_id="w1", attempts=1)
    assert a.status == StepStatus.RUNNING and a.worker_id == "w1"
    assert not a.move(StepStatus.SUCCESS, guard={"id": a.id, "status": StepStatus.RUNNING, "worker_id": "w2"})
    assert a.move(StepStatus.SUCCESS, guard={"id": a.id, "status": StepStatus.RUNNING, "worker_id": "w1"})
    # A bulk move leaves alone the steps that may not go there: the finished step stays SUCCESS.
    assert RunStep.objects.filter(run=run).move(StepStatus.CANCELLED) == 1
    assert dict(run.steps.values_list("key", "status")) == {"a": StepStatus.SUCCESS, "b": StepStatus.CANCELLED}
    with pytest.raises(InvalidTransition):
        RunStep.objects.get(id=a.id).move(StepStatus.PENDING)
    assert WorkflowRun.objects.get(id=run.id).status == RunStatus.PENDING
