"""Maintenance: the periodic pass every worker makes. The reaper closes attempts whose lease expired (their
worker died) as LOST and puts their steps back; READY steps whose queue message was lost are queued again;
the apps' jobs (workflows.events.maintenance_jobs: expiring approvals) and retention run after them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import AgentRun
from workflows import events
from workflows.models import (
    ACTIVE_RUN_STATUSES,
    RunStep,
    StepStatus,
    WorkflowRun,
)
from workflows.runner.attempt import Outcome, _close_attempt
from workflows.runner.lease import (
    CONNECTION_ERRORS,
    WORKER_LOST_PATH,
    _queue_is_transactional,
    drop_connection,
    enqueue_step,
    logger,
)
from workflows.runner.settling import handle_lost_attempt
from workflows.tasks import execute_step


def reap_expired_leases(limit: int = 100) -> int:
    """Closes attempts whose worker stopped renewing the lease as LOST and puts their steps back (or fails them
    once the infrastructure budget is spent); the queue rows those workers left RUNNING are closed too."""
    now = timezone.now()
    expired = list(
        RunStep.objects.filter(status=StepStatus.RUNNING, lease_expires_at__lt=now).values_list("id", "run_id")[:limit]
    )
    return sum(_reap(step_id, run_id, now) for step_id, run_id in expired)


def release_abandoned(worker: str, limit: int = 100) -> int:
    """Closes as LOST the attempts that ``worker`` (this process) holds but no longer runs, and puts their steps back.

    A task cut off by a lost database connection can leave its step RUNNING under this worker's lease with nobody
    working on it. The worker calls this between tasks, once the database answers again, instead of leaving the
    step to wait until its lease runs out.
    """
    now = timezone.now()
    held = list(RunStep.objects.filter(status=StepStatus.RUNNING, worker_id=worker).values_list("id", "run_id")[:limit])
    return sum(_reap(step_id, run_id, now, holder=worker) for step_id, run_id in held)


def _reap(step_id: int, run_id: Any, now: datetime, *, holder: str | None = None) -> bool:
    """Closes the running attempt of one step as LOST: its lease expired, or (``holder``) that worker let it go."""
    with transaction.atomic():
        run = WorkflowRun.objects.select_for_update().get(id=run_id)
        step = RunStep.objects.get(id=step_id)
        if step.status != StepStatus.RUNNING:
            return False
        if holder is None:
            if step.lease_expires_at is None or step.lease_expires_at >= now:
                return False
            error_type = "WorkerLost"
            message = (
                f"worker {step.worker_id or '?'} stopped renewing its lease, which expired at "
                f"{step.lease_expires_at.isoformat(timespec='seconds')}"
            )
        else:
            if step.worker_id != holder:
                return False
            error_type = "ConnectionLost"
            message = f"worker {holder} lost its database connection while running this attempt"
        node = run.node(step.key)
        attempt = AgentRun.objects.filter(step=step, attempt=step.attempts).first()
        if attempt is None:
            # The worker died between claiming the step and recording the attempt.
            attempt = AgentRun(
                run=run,
                step=step,
                attempt=step.attempts,
                agent_type=node["agent_type"],
                action=node["action"],
                worker_id=step.worker_id,
                started_at=step.started_at or now,
            )
            attempt.save(force_insert=True)
        guard = RunStep.objects.filter(
            id=step.id,
            status=StepStatus.RUNNING,
            attempts=step.attempts,
            worker_id=step.worker_id,
            lease_expires_at=step.lease_expires_at,
        )
        gone = step.worker_id
        if not handle_lost_attempt(run, step, node, error_type, message, now, guard=guard):
            return False  # renewed or finished meanwhile
        lost = Outcome(AgentRun.Status.LOST, error_type=error_type, error_message=message)
        if _close_attempt(attempt, lost, now):
            events.attempt_finished(run, step, attempt, node)
        if holder is None and gone:
            _close_queue_rows(now, message, worker=gone)
        logger.warning(
            "reaped step %s of run %s (%s)",
            step.key,
            run.id,
            error_type,
            extra={"event": "step.reaped", "run_id": str(run.id)},
        )
    return True


def _close_queue_rows(now: datetime, message: str, *, worker: str = "", steps: set[int] | None = None) -> int:
    """Marks FAILED the step tasks left RUNNING in the database queue by ``worker``, or those of ``steps``.

    A queue row only carried "work on step X". Once the step has been put back, a row left RUNNING by a dead
    worker would show a task running for days, until retention removes it. A worker that was only cut off from
    the database overwrites its row when it finishes the task.
    """
    if not _queue_is_transactional():
        return 0
    from django.tasks import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    running = DBTaskResult.objects.filter(status=TaskResultStatus.RUNNING, task_path=execute_step.module_path)
    ids = [
        pk
        for pk, workers, args in running.values_list("id", "worker_ids", "args_kwargs")
        if (worker and workers and workers[-1] == worker) or (steps and (args.get("args") or [None])[0] in steps)
    ]
    if not ids:
        return 0
    return DBTaskResult.objects.filter(id__in=ids, status=TaskResultStatus.RUNNING).update(
        status=TaskResultStatus.FAILED,
        finished_at=now,
        exception_class_path=WORKER_LOST_PATH,
        traceback=message,
    )


def requeue_stale_ready(limit: int = 100) -> int:
    """Re-enqueues READY steps that nobody claimed within the grace period and that have no queued task.

    That covers a task lost between commit and enqueue (non-transactional queues) or removed from the queue.
    A step whose task is merely waiting behind a backlog is left alone: re-enqueueing it would only grow the
    backlog. (With the RQ backend the queue cannot be inspected cheaply, so the grace period alone decides.)
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.RUNNER_READY_GRACE_SECONDS)
    stale = list(
        RunStep.objects.filter(
            status=StepStatus.READY, ready_at__lt=cutoff, run__status__in=ACTIVE_RUN_STATUSES
        ).values_list("id", "ready_at")[:limit]
    )
    if stale and _queue_is_transactional():
        queued = _queued_step_ids(started_after=cutoff)
        stale = [(step_id, ready_at) for step_id, ready_at in stale if step_id not in queued]
    requeued = [
        step_id
        for step_id, ready_at in stale
        if RunStep.objects.filter(id=step_id, status=StepStatus.READY, ready_at=ready_at).update(ready_at=now)
    ]
    if requeued:
        # A task still RUNNING for one of these steps was taken by a worker that never claimed the step. It is
        # closed before the new task exists, which a worker could otherwise take (RUNNING) in between.
        _close_queue_rows(now, "the worker that took this task never claimed its step", steps=set(requeued))
    for step_id in requeued:
        enqueue_step(step_id)
    return len(requeued)


def _queued_step_ids(*, started_after: datetime) -> set[int]:
    """Steps that have a task waiting in the database queue, or one a worker took after ``started_after``.

    A task claims its step within milliseconds of being taken. One that was taken before ``started_after``
    while its step is still READY was orphaned: its worker died, or lost its connection, between taking the
    task and claiming the step, and could not record the outcome. It must not hide the step from the sweep.
    """
    from django.tasks import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    pending = DBTaskResult.objects.filter(
        Q(status=TaskResultStatus.READY) | Q(status=TaskResultStatus.RUNNING, started_at__gte=started_after),
        task_path=execute_step.module_path,
    ).values_list("args_kwargs", flat=True)
    return {int(args["args"][0]) for args in pending if args.get("args")}


def maintenance() -> dict[str, int]:
    """One pass of the periodic work every worker does; safe to run from many workers at once.

    Each job runs on its own: one that fails (the database went away half-way, a bug) is logged and the others
    still run; a broken connection is dropped so the next job, or the next pass, starts on a fresh one.
    Pruning old rows (workflows.retention) runs in at most one pass per RETENTION_INTERVAL_SECONDS.
    """
    from workflows.retention import prune_if_due

    def prune() -> dict[str, int]:
        return {f"pruned_{kind}": count for kind, count in prune_if_due().items()}

    jobs: list[tuple[str, Callable[[], int | dict[str, int]]]] = [
        ("reaped", reap_expired_leases),
        ("requeued", requeue_stale_ready),
        *((job.name, job.run) for job in events.maintenance_jobs),
        ("pruned", prune),
    ]
    done: dict[str, int] = {}
    for name, job in jobs:
        try:
            result = job()
        except CONNECTION_ERRORS as exc:
            logger.warning("maintenance job %s: database unreachable (%s); the others go on", name, exc)
            drop_connection()
            continue
        except Exception:
            logger.exception(
                "maintenance job %s failed; the others go on", name, extra={"event": "maintenance.failed", "job": name}
            )
            continue
        done.update(result if isinstance(result, dict) else {name: result})
    return done
