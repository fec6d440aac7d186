"""DAG settling: what happens to a run once a step moved. Every function here runs in a transaction that
holds the run's row lock (``lock_run``), so the decisions for one run are serialised across workers.

``advance`` makes the steps whose dependencies succeeded ready (or gated, or claimed inline), ``settle`` derives
the run's status from its steps', failures retry per the node's policy or fail the run, and an attempt cut
short by infrastructure is put back under its own budget (``handle_lost_attempt``). The operator's cancel
and retry (called through workflows.actions) close or reopen steps the same way.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from workflows import events
from workflows.models import (
    OPEN_STEP_STATUSES,
    InvalidTransition,
    RunStatus,
    RunStep,
    StepStatus,
    WorkflowRun,
)
from workflows.runner.lease import enqueue_with_transaction, lease_delta, shutdown_requested


def backoff_delay(retry: dict[str, Any], failed_attempt: int) -> float:
    """Delay before the attempt after ``failed_attempt``: exponential, capped, with +-jitter."""
    delay = min(float(retry["backoff_seconds"]) * 2 ** (failed_attempt - 1), float(retry["backoff_max_seconds"]))
    jitter = float(retry.get("jitter", 0))
    return max(0.0, delay * (1 + random.uniform(-jitter, jitter)))


def lock_run(run: WorkflowRun) -> WorkflowRun:
    """Takes the run's row lock and refreshes what others may change (status, times, error) on ``run``.

    The definition and context never change after the trigger, so they are not read again: with a large
    definition that saves decoding it after every step.
    """
    fresh = (
        WorkflowRun.objects.select_for_update()
        .only("id", "status", "started_at", "finished_at", "error", "trace_context")
        .get(id=run.id)
    )
    for name in ("status", "started_at", "finished_at", "error", "trace_context"):
        setattr(run, name, getattr(fresh, name))
    return run


def handle_failure(
    run: WorkflowRun,
    step: RunStep,
    node: dict[str, Any],
    error_type: str,
    message: str,
    permanent: bool,
    now: datetime,
    *,
    guard: Any = None,
    retry_after: float = 0.0,
) -> bool:
    """Retries the step per its policy, or fails it and the run. Caller holds the run lock.

    ``guard`` is the queryset that must still match the step for the change to apply (ownership); returns
    whether it did. A retry waits for the node's backoff or ``retry_after`` (what the remote side asked),
    whichever is longer.
    """
    counted = step.attempts - step.attempt_offset
    retry = not permanent and counted < int(node["retry"]["max_attempts"])
    fields: dict[str, Any] = {"error": f"{error_type}: {message}"[:5000], "lease_expires_at": None, "worker_id": ""}
    delay = 0.0
    if retry:
        delay = max(backoff_delay(node["retry"], counted), retry_after)
        target = StepStatus.READY
        fields.update(run_after=now + timedelta(seconds=delay), ready_at=now + timedelta(seconds=delay))
    else:
        target = StepStatus.FAILED
        fields.update(finished_at=now)
    if not step.move(target, guard=guard if guard is not None else RunStep.objects.filter(id=step.id), **fields):
        return False
    if retry:
        events.retry_scheduled(run, step, node, reason=error_type, delay=delay)
        enqueue_with_transaction(step.id, step.run_after if delay > 0 else None)
    else:
        tries = f"{counted} attempt{'s' if counted != 1 else ''}"
        fail_run(run, f"step '{step.key}' failed after {tries}: {error_type}: {message}", now)
    return True


# The wait before putting a step back after its second, third, ... attempt lost to infrastructure (the first goes
# back at once): a step that takes its worker down with it each time does not cycle through the fleet at speed.
INFRASTRUCTURE_BACKOFF = {"backoff_seconds": 1.0, "backoff_max_seconds": 30.0, "jitter": 0.1}


def handle_lost_attempt(
    run: WorkflowRun,
    step: RunStep,
    node: dict[str, Any],
    error_type: str,
    message: str,
    now: datetime,
    *,
    guard: Any,
    immediate: bool = False,
) -> bool:
    """Puts back a step whose attempt was cut short by infrastructure, not by the step itself.

    Its worker died or lost the database until the lease ran out (the attempt is LOST), or handed the step back
    at shutdown. Such an attempt does not count against the node's max_attempts. The step goes back to READY at
    most RUNNER_INFRASTRUCTURE_RETRIES times for such losses, the first at once (``immediate``: every time),
    later ones after INFRASTRUCTURE_BACKOFF; the loss after that fails it, saying why. Caller holds the run lock;
    ``guard`` is the queryset that must still match the step (see handle_failure). Returns whether it did.
    """
    lost = RunStep.objects.filter(id=step.id).values_list("infrastructure_attempts", flat=True).get() + 1
    budget = settings.RUNNER_INFRASTRUCTURE_RETRIES
    retry = lost <= budget
    delay = 0.0 if immediate or lost == 1 else backoff_delay(INFRASTRUCTURE_BACKOFF, lost - 1)
    fields: dict[str, Any] = {
        "error": f"{error_type}: {message}"[:5000],
        "lease_expires_at": None,
        "worker_id": "",
        "attempt_offset": F("attempt_offset") + 1,
        "infrastructure_attempts": lost,
    }
    if retry:
        due = now + timedelta(seconds=delay)
        target = StepStatus.READY
        fields.update(run_after=due, ready_at=due)
    else:
        target = StepStatus.FAILED
        fields.update(finished_at=now)
    if not step.move(target, guard=guard, **fields):
        return False
    step.attempt_offset += 1  # an expression in the UPDATE, so move() left it to us
    if retry:
        events.retry_scheduled(run, step, node, reason=error_type, delay=delay)
        enqueue_with_transaction(step.id, step.run_after if delay > 0 else None)
    else:
        fail_run(
            run,
            f"step '{step.key}' failed: {lost} of its attempts were cut short by infrastructure faults (worker "
            f"lost, database unreachable, shutdown), more than RUNNER_INFRASTRUCTURE_RETRIES={budget} allows; "
            f"the last: {error_type}: {message}",
            now,
        )
    return True


def _close_open_steps(run: WorkflowRun, now: datetime) -> None:
    RunStep.objects.filter(run=run, status__in=OPEN_STEP_STATUSES).move(
        StepStatus.CANCELLED, finished_at=now, lease_expires_at=None
    )
    events.run_closing(run)


def fail_run(run: WorkflowRun, reason: str, now: datetime) -> None:
    """Fails the run: every step still open is cancelled (fail fast). Caller holds the run lock."""
    _close_open_steps(run, now)
    run.transition(RunStatus.FAILED, reason=reason)


def reject_run(run: WorkflowRun, reason: str, actor: str, now: datetime) -> None:
    """An approval gate was rejected (or expired): every step still open is cancelled. Caller holds the run lock."""
    _close_open_steps(run, now)
    run.transition(RunStatus.REJECTED, reason=reason, actor=actor)


def release_gate(run: WorkflowRun, step: RunStep, now: datetime) -> None:
    """An approval gate was approved: the step becomes READY and is queued once the caller's transaction
    commits, and the run goes back to RUNNING. Caller holds the run lock."""
    if step.status != StepStatus.WAITING_APPROVAL:
        raise InvalidTransition("step", step.status, StepStatus.READY)
    step.move(StepStatus.READY, ready_at=now, run_after=None)
    enqueue_with_transaction(step.id)
    settle(run, set(RunStep.objects.filter(run=run).values_list("status", flat=True)), now)


def advance(run: WorkflowRun, now: datetime, *, inline_worker: str | None = None) -> RunStep | None:
    """Makes every step whose dependencies all succeeded ready (or gated), then settles the run status.

    With ``inline_worker`` the first ready step is claimed for that worker in this same transaction and
    returned, so the caller runs it next without a trip through the queue. Caller holds the run lock.
    """
    # Plain rows, not model instances: this runs after every step, over every step of the run.
    rows = RunStep.rows_of(run.id)
    status_of = {key: status for _, key, status, _, _ in rows}
    nodes = {node["key"]: node for node in run.definition["nodes"]}
    inline: RunStep | None = None
    for step_id, key, status, attempts, attempt_offset in rows:
        node = nodes[key]
        if status != StepStatus.PENDING or any(status_of[dep] != StepStatus.SUCCESS for dep in node["depends_on"]):
            continue
        step = RunStep(id=step_id, run=run, key=key, status=status, attempts=attempts, attempt_offset=attempt_offset)
        step._state.adding = False
        step._state.db = run._state.db
        if node["approval"]["required"]:
            step.move(StepStatus.WAITING_APPROVAL, ready_at=now)
            events.gate_opened(run, step, node, now)
        elif inline is None and inline_worker is not None and not shutdown_requested.is_set():
            step.move(
                StepStatus.RUNNING,
                attempts=step.attempts + 1,
                worker_id=inline_worker,
                lease_expires_at=now + lease_delta(),
                started_at=now,
                ready_at=now,
            )
            inline = step
        else:
            step.move(StepStatus.READY, ready_at=now)
            enqueue_with_transaction(step.id)
        status_of[key] = step.status
    settle(run, set(status_of.values()), now)
    return inline


def settle(run: WorkflowRun, statuses: set[str], now: datetime) -> None:
    """Derives the run status from its steps' statuses. Caller holds the run lock."""
    if run.is_terminal:
        return
    if statuses == {StepStatus.SUCCESS}:
        run.transition(RunStatus.SUCCESS)
    elif StepStatus.RUNNING in statuses or (StepStatus.READY in statuses and run.status != RunStatus.PENDING):
        if run.status != RunStatus.RUNNING:
            run.transition(RunStatus.RUNNING)
    elif StepStatus.READY in statuses:
        pass  # still PENDING: queued, no worker has started it yet
    elif StepStatus.WAITING_APPROVAL in statuses:
        if run.status != RunStatus.WAITING_APPROVAL:
            run.transition(RunStatus.WAITING_APPROVAL)
    else:
        fail_run(run, "no step can make progress (steps: " + ", ".join(sorted(statuses)) + ")", now)


def cancel_run(run: WorkflowRun, *, reason: str, actor: str) -> None:
    """Cancels a run in flight; workers running its steps notice at their next lease renewal."""
    with transaction.atomic():
        locked = WorkflowRun.objects.select_for_update().get(id=run.id)
        if locked.is_terminal:
            raise InvalidTransition("run", locked.status, RunStatus.CANCELLED)
        now = timezone.now()
        _close_open_steps(locked, now)
        locked.transition(RunStatus.CANCELLED, reason=reason, actor=actor)
    run.refresh_from_db()


def retry_run(run: WorkflowRun, *, actor: str) -> None:
    """Re-runs the failed (and the cancelled) steps of a FAILED run, with a fresh retry budget."""
    with transaction.atomic():
        locked = WorkflowRun.objects.select_for_update().get(id=run.id)
        if locked.status != RunStatus.FAILED:
            raise InvalidTransition("run", locked.status, RunStatus.RUNNING)
        for step in RunStep.objects.filter(run=locked, status__in=(StepStatus.FAILED, StepStatus.CANCELLED)):
            step.move(
                StepStatus.PENDING,
                attempt_offset=step.attempts,
                infrastructure_attempts=0,
                error="",
                finished_at=None,
                run_after=None,
            )
        now = timezone.now()
        locked.transition(RunStatus.RUNNING, reason="retry of failed steps", actor=actor)
        advance(locked, now)
    run.refresh_from_db()
