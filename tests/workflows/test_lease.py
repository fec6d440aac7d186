"""Leases: a step that runs longer than its lease is kept by the worker renewing it, not reaped.

The lease is RUNNER_LEASE_SECONDS (renewed every third of it); here it is one second and the step sleeps three,
while the reaper runs over and over beside it, as every worker's maintenance loop would.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone

from agents.models import AgentRun
from tests.conftest import work
from tests.workflows.helpers import define
from workflows import runner
from workflows.models import TERMINAL_RUN_STATUSES, RunStatus, RunStep, StepStatus, WorkflowRun
from workflows.runner import attempt as attempt_module
from workflows.services import trigger_workflow

pytestmark = pytest.mark.django_db(transaction=True)

LEASE_SECONDS = 1.0
STEP_SECONDS = 3.0  # three leases long
AGENTS = [{"slug": "l-sleep", "type": "sleep"}]


@dataclass
class Watch:
    """What the reaper saw while the step was RUNNING."""

    reaped: list[int] = field(default_factory=list)
    passes_at: list[datetime] = field(default_factory=list)
    leases: set[datetime] = field(default_factory=set)


def run_beside_the_reaper(tmp_path: Path, slug: str) -> tuple[WorkflowRun, Watch]:
    """Starts a one-step run on a worker thread and runs the reaper until the run is over."""
    wf = define(tmp_path, slug, [{"key": "long", "agent": "l-sleep", "inputs": {"seconds": STEP_SECONDS}}], AGENTS)
    run, _ = trigger_workflow(wf, context={})

    def worker() -> None:
        try:
            work(lambda: WorkflowRun.objects.get(id=run.id).status in TERMINAL_RUN_STATUSES, timeout=30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=worker, name=f"worker-{slug}")
    thread.start()
    watch = Watch()
    try:
        while thread.is_alive():
            step = RunStep.objects.get(run=run)
            if step.status == StepStatus.RUNNING and step.lease_expires_at is not None:
                watch.leases.add(step.lease_expires_at)
                watch.passes_at.append(timezone.now())
                watch.reaped.append(runner.reap_expired_leases())
            time.sleep(0.1)
    finally:
        thread.join(30)
    assert not thread.is_alive()
    run.refresh_from_db()
    return run, watch


def first_lease_expiry(run: WorkflowRun) -> datetime:
    """When the lease taken with the claim ran out, had it not been renewed."""
    attempt = AgentRun.objects.get(run=run, attempt=1)
    return attempt.started_at + timedelta(seconds=LEASE_SECONDS)


def test_a_step_longer_than_its_lease_is_not_reaped_while_its_worker_renews(tmp_path: Path, settings: Any) -> None:
    settings.RUNNER_LEASE_SECONDS = LEASE_SECONDS
    run, watch = run_beside_the_reaper(tmp_path, "lease-renewed")

    # The reaper looked at the running step after the lease it was claimed with had run out...
    assert any(at > first_lease_expiry(run) for at in watch.passes_at)
    # ...and found it renewed each time, so it never took it away.
    assert len(watch.leases) > 1
    assert set(watch.reaped) == {0}
    assert run.status == RunStatus.SUCCESS
    assert list(run.attempts.values_list("attempt", "status", "error_type")) == [(1, AgentRun.Status.SUCCESS, "")]
    assert run.attempts.get().output == {"slept": STEP_SECONDS}


def test_without_renewals_the_same_step_is_reaped(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counter-test: the scenario above does reap a step whose worker stops renewing its lease (with no
    infrastructure retries left, so that the one lost attempt ends the run)."""
    settings.RUNNER_LEASE_SECONDS = LEASE_SECONDS
    settings.RUNNER_INFRASTRUCTURE_RETRIES = 0
    monkeypatch.setattr(attempt_module, "_renew_lease", lambda step, attempt, worker: True)
    run, watch = run_beside_the_reaper(tmp_path, "lease-lapsed")

    assert sum(watch.reaped) == 1
    assert run.status == RunStatus.FAILED and "WorkerLost" in run.error
    assert "cut short by infrastructure" in run.error
    assert list(run.attempts.values_list("attempt", "status", "error_type")) == [
        (1, AgentRun.Status.LOST, "WorkerLost")
    ]
