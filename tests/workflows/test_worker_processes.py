"""Real `manage.py worker` processes: racing for steps, killed mid-step, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from agents.models import AgentRun
from tests.children import popen
from tests.workflows.helpers import define
from workflows import runner
from workflows.models import TERMINAL_RUN_STATUSES, RunStatus, RunStep, StepStatus, WorkflowRun
from workflows.services import trigger_workflow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

AGENTS = [{"slug": "p-sleep", "type": "sleep"}, {"slug": "p-echo", "type": "echo"}]


def database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = popen(
            [sys.executable, "manage.py", "worker", "--worker-id", name, "--interval", "0.2"],
            cwd=settings.BASE_DIR,
            env={
                **os.environ,
                "DATABASE_URL": database_url(),
                "DEBUG": "1",
                "OTEL_SDK_DISABLED": "true",
                "RUNNER_LEASE_SECONDS": "2",
                "RUNNER_REAPER_INTERVAL": "0.3",
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_workers_race_for_steps_and_each_runs_once_per_attempt(tmp_path: Path, start_worker: Callable) -> None:
    nodes: list[dict[str, Any]] = [{"key": "root", "agent": "p-echo"}]
    nodes += [
        {"key": f"b{i}", "agent": "p-sleep", "depends_on": ["root"], "inputs": {"seconds": 0.2}} for i in range(8)
    ]
    nodes += [{"key": "join", "agent": "p-echo", "depends_on": [f"b{i}" for i in range(8)]}]
    wf = define(tmp_path, "race", nodes, AGENTS)
    start_worker("w1")
    start_worker("w2")
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    wait_for(lambda: all(b"started" in log.read_bytes() for log in logs), 30, "both workers to start")
    runs = [trigger_workflow(wf, context={"n": i})[0] for i in range(6)]
    # At-least-once delivery: every step is announced twice more while the workers race.
    for step_id in RunStep.objects.values_list("id", flat=True):
        runner.enqueue_step(step_id)
        runner.enqueue_step(step_id)
    wait_for(
        lambda: WorkflowRun.objects.filter(status__in=TERMINAL_RUN_STATUSES).count() == len(runs), 60, "all runs to end"
    )
    assert (
        list(
            AgentRun.objects.exclude(status="SUCCESS").values_list(
                "step__key",
                "attempt",
                "status",
                "error_type",
                "error_message",
                "worker_id",
                "started_at",
                "finished_at",
            )
        )
        == []
    )
    assert set(WorkflowRun.objects.values_list("status", flat=True)) == {RunStatus.SUCCESS}
    assert AgentRun.objects.count() == len(runs) * 10  # each step exactly once
    assert not AgentRun.objects.exclude(attempt=1).exists()
    assert set(AgentRun.objects.values_list("worker_id", flat=True).distinct()).__len__() == 2
    # Branches of one run ran at the same time on the two workers.
    overlaps = 0
    for run in runs:
        rows = list(AgentRun.objects.filter(run=run, step__key__startswith="b"))
        overlaps += any(
            a.worker_id != b.worker_id
            and a.finished_at is not None
            and b.finished_at is not None
            and a.started_at < b.finished_at
            and b.started_at < a.finished_at
            for a in rows
            for b in rows
        )
    assert overlaps > 0


def test_a_worker_killed_mid_step_is_recovered_by_the_reaper(tmp_path: Path, start_worker: Callable) -> None:
    wf = define(
        tmp_path,
        "kill",
        [
            {
                "key": "long",
                "agent": "p-sleep",
                "inputs": {"seconds": 2},
                "retry": {"max_attempts": 2, "backoff_seconds": 0.1},
            },
            {"key": "after", "agent": "p-echo", "depends_on": ["long"]},
        ],
        AGENTS,
    )
    run, _ = trigger_workflow(wf, context={})
    victim = start_worker("victim")
    wait_for(lambda: AgentRun.objects.filter(run=run, worker_id="victim").exists(), 20, "the step to start")
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)
    killed_at = time.monotonic()
    start_worker("rescuer")
    wait_for(lambda: WorkflowRun.objects.get(id=run.id).status in TERMINAL_RUN_STATUSES, 30, "the run to end")
    recovery = time.monotonic() - killed_at
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS
    rows = list(run.attempts.filter(step__key="long").order_by("attempt"))
    assert [(r.attempt, r.status, r.error_type) for r in rows] == [(1, "LOST", "WorkerLost"), (2, "SUCCESS", "")]
    assert (rows[0].worker_id, rows[1].worker_id) == ("victim", "rescuer")
    # lease 2 s + reaper interval + the 2 s step + the rest of the chain
    assert recovery < 15
    assert not RunStep.objects.filter(status=StepStatus.RUNNING).exists()


def test_sigterm_lets_the_running_step_finish_then_exits(tmp_path: Path, start_worker: Callable) -> None:
    wf = define(tmp_path, "term", [{"key": "s", "agent": "p-sleep", "inputs": {"seconds": 1.0}}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    proc = start_worker("polite")
    wait_for(lambda: run.attempts.exists(), 20, "the step to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS and run.attempts.get().status == "SUCCESS"


def test_sigterm_releases_a_step_that_outlives_the_grace_period(tmp_path: Path, start_worker: Callable) -> None:
    wf = define(tmp_path, "release", [{"key": "s", "agent": "p-sleep", "inputs": {"seconds": 30}}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    proc = start_worker("leaving", WORKER_SHUTDOWN_GRACE_SECONDS="0.5")
    wait_for(lambda: run.attempts.exists(), 20, "the step to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    step = run.steps.get()
    assert step.status == StepStatus.READY  # handed back for another worker, not counted as a failure
    attempt = run.attempts.get()
    assert attempt.status == "CANCELLED" and attempt.error_type == "WorkerShutdown"
    assert step.attempts - step.attempt_offset == 0
