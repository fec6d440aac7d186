"""SIGTERM a worker in the middle of a step, under load: it finishes or hands back the step; nothing orphaned."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from agents.models import AgentRun
from tests.reliability.conftest import Processes, free_port, record_result, wait_for
from tests.workflows.helpers import define
from workflows.models import TERMINAL_RUN_STATUSES, RunStatus, RunStep, StepStatus, WorkflowRun
from workflows.services import trigger_workflow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.mark.timeout(240)
def test_sigterm_mid_step_finishes_or_releases_and_orphans_nothing(tmp_path: Path, processes: Processes) -> None:
    wf = define(
        tmp_path,
        "term-load",
        [
            {"key": "slow", "agent": "t-sleep", "inputs": {"seconds": "{{ context.s }}"}, "retry": {"max_attempts": 3}},
            {"key": "after", "agent": "t-sleep", "depends_on": ["slow"], "inputs": {"seconds": 0.05}},
        ],
        [{"slug": "t-sleep", "type": "sleep"}],
    )
    runs = [trigger_workflow(wf, context={"s": 1.5 + (i % 3) * 0.5})[0].id for i in range(8)]
    patient = processes.worker("patient", WORKER_SHUTDOWN_GRACE_SECONDS="15")
    hasty = processes.worker("hasty", WORKER_SHUTDOWN_GRACE_SECONDS="0.3")

    def holds_a_step(name: str) -> bool:
        return RunStep.objects.filter(status=StepStatus.RUNNING, worker_id=name).exists()

    wait_for(lambda: holds_a_step("patient") and holds_a_step("hasty"), 60, "both workers to hold a step")
    held = {
        name: list(RunStep.objects.filter(status=StepStatus.RUNNING, worker_id=name).values_list("id", flat=True))
        for name in ("patient", "hasty")
    }
    started = time.monotonic()
    patient.send_signal(signal.SIGTERM)
    hasty.send_signal(signal.SIGTERM)
    assert hasty.wait(30) == 0
    hasty_exit = time.monotonic() - started
    assert patient.wait(60) == 0
    patient_exit = time.monotonic() - started

    # The patient worker finished what it held; the hasty one handed its step back without using an attempt.
    finished = AgentRun.objects.filter(step_id__in=held["patient"], worker_id="patient")
    assert set(finished.values_list("status", flat=True)) == {AgentRun.Status.SUCCESS}
    released = AgentRun.objects.filter(step_id__in=held["hasty"], worker_id="hasty")
    assert {(a.status, a.error_type) for a in released} == {(AgentRun.Status.CANCELLED, "WorkerShutdown")}
    for step in RunStep.objects.filter(id__in=held["hasty"]):
        assert step.status == StepStatus.READY and step.worker_id == ""
        assert step.attempts - step.attempt_offset == 0 and step.infrastructure_attempts == 1
    # Nothing is left claimed by the stopped workers.
    gone = ["patient", "hasty"]
    assert not RunStep.objects.filter(worker_id__in=gone).exists()
    assert not AgentRun.objects.filter(worker_id__in=gone, status=AgentRun.Status.RUNNING).exists()

    processes.worker("rescuer")
    took = wait_for(
        lambda: WorkflowRun.objects.filter(id__in=runs, status__in=TERMINAL_RUN_STATUSES).count() == len(runs),
        120,
        "every run to finish",
    )
    assert set(WorkflowRun.objects.filter(id__in=runs).values_list("status", flat=True)) == {RunStatus.SUCCESS}
    assert not AgentRun.objects.filter(run_id__in=runs, status=AgentRun.Status.LOST).exists()
    record_result(
        "sigterm",
        load=f"{len(runs)} runs x 2 steps (1.5-2.5 s, then 0.05 s), 2 workers",
        faults="SIGTERM to both mid-step: grace 15 s (finishes) and 0.3 s (releases)",
        lost=0,
        stuck=0,
        duplicates=0,
        released_steps=len(held["hasty"]),
        finished_steps=len(held["patient"]),
        hasty_exit_s=round(hasty_exit, 1),
        patient_exit_s=round(patient_exit, 1),
        rest_done_after_s=round(took, 1),
    )


@pytest.mark.timeout(120)
def test_a_worker_stops_promptly_on_sigterm_when_the_collector_is_down(
    tmp_path: Path, default_processes: Processes
) -> None:
    wf = define(tmp_path, "term-otel", [{"key": "e", "agent": "t-echo"}], [{"slug": "t-echo", "type": "echo"}])
    collector = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    # Idle workers notice SIGTERM at their next poll: a short one keeps that out of the comparison.
    poll = {"WORKER_POLL_INTERVAL": "0.1"}
    traced = default_processes.worker(
        "traced", OTEL_SDK_DISABLED="false", OTEL_EXPORTER_OTLP_ENDPOINT=collector, **poll
    )
    run, _ = trigger_workflow(wf, context={})
    wait_for(lambda: WorkflowRun.objects.get(id=run.id).status == RunStatus.SUCCESS, 60, "the run to succeed")
    # Beside it, the same worker without telemetry: what stopping costs on this machine anyway.
    untraced = default_processes.worker("untraced", LOG_LEVEL="info", **poll)
    wait_for(lambda: "worker untraced started" in default_processes.log("worker-untraced"), 60, "the second worker")
    time.sleep(1.5)  # the exporters have tried, and failed, to send the spans, metrics and logs
    took: dict[str, float] = {}
    started = time.monotonic()
    for proc in (traced, untraced):
        proc.send_signal(signal.SIGTERM)
    while len(took) < 2 and time.monotonic() - started < 30:
        for name, proc in (("traced", traced), ("untraced", untraced)):
            if name not in took and proc.poll() is not None:
                took[name] = time.monotonic() - started
        time.sleep(0.02)
    assert traced.returncode == 0 and untraced.returncode == 0, took
    record_result(
        "sigterm-collector-down",
        load="1 run, then idle; beside it the same worker without telemetry",
        faults="OTLP collector down (nothing listens), SIGTERM to both",
        stop_s={k: round(v, 2) for k, v in took.items()},
    )
    # The flush at exit is bounded (TELEMETRY_SHUTDOWN_TIMEOUT_SECONDS, default 1 s, plus what tearing down the
    # telemetry costs); it used to cost 5 s.
    assert took["traced"] - took["untraced"] < 2.0, took
