"""Claiming and leases: which worker this is, how steps are queued, how a worker takes one (a conditional
UPDATE, so a duplicate delivery finds nothing to claim), and how long its lease lasts; shutdown requests;
and riding out a database outage while the lease lasts (``through_outage``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache, partial

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.db.utils import DatabaseError, InterfaceError, OperationalError
from django.utils import timezone

from workflows.models import (
    ACTIVE_RUN_STATUSES,
    RunStep,
    StepStatus,
    WorkflowRun,
)
from workflows.tasks import execute_step

logger = logging.getLogger("workflows.runner")


# What a lost or refused connection raises (server restarting or down, backend terminated, network): the
# statement may succeed on a fresh connection. A bad statement raises other DatabaseErrors.
CONNECTION_ERRORS = (OperationalError, InterfaceError)


# Set by the worker on SIGTERM: no new inline claims, and a running step is released after the grace.
shutdown_requested = threading.Event()


_shutdown_at: list[float] = []


def request_shutdown() -> None:
    if not shutdown_requested.is_set():
        _shutdown_at.append(time.monotonic())
        shutdown_requested.set()


_worker_name: str | None = None


def set_worker_id(name: str) -> None:
    """Names this process (the worker command's --worker-id) in leases, attempt rows and queue rows."""
    global _worker_name
    _worker_name = name


def worker_id() -> str:
    """Identifies this process in leases, attempt rows and queue rows: the name it was given, else host:pid
    (computed at each call, so it is right after a fork)."""
    return _worker_name or f"{socket.gethostname()}:{os.getpid()}"


class WorkerLost(Exception):
    """Recorded on a queue row whose worker stopped renewing the lease of the step it was running."""


# The class path queue rows name it by, as workflows.runner exports it (the rows kept that path when the runner
# became a package).
WORKER_LOST_PATH = "workflows.runner.WorkerLost"


def lease_delta() -> timedelta:
    return timedelta(seconds=settings.RUNNER_LEASE_SECONDS)


def enqueue_step(step_id: int, run_after: datetime | None = None) -> None:
    task = execute_step if run_after is None else execute_step.using(run_after=run_after)
    task.enqueue(step_id)


def enqueue_with_transaction(step_id: int, run_after: datetime | None = None) -> None:
    """Queues the step so that workers see it only once the current transaction commits.

    With the database backend the task row is written in the same transaction as the step's new state,
    so both commit or neither does; other backends are called after the commit.
    """
    if _queue_is_transactional():
        enqueue_step(step_id, run_after)
    else:
        transaction.on_commit(partial(enqueue_step, step_id, run_after))


@cache
def _queue_is_transactional() -> bool:
    from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends
    from django_tasks_db.backend import DatabaseBackend

    return isinstance(task_backends[DEFAULT_TASK_BACKEND_ALIAS], DatabaseBackend)


def claim(step_id: int, worker: str, now: datetime | None = None) -> bool:
    """Takes a READY step whose time has come; False when another worker (or nothing) got there first."""
    now = now or timezone.now()
    # No join in this UPDATE: with one, Django writes `WHERE id IN (SELECT ...)`, and PostgreSQL re-checks only
    # that id list after waiting for a concurrent claim, so two workers could both take the step.
    run_active = WorkflowRun.objects.filter(id=OuterRef("run_id"), status__in=ACTIVE_RUN_STATUSES)
    updated = (
        RunStep.objects.filter(Exists(run_active), id=step_id, status=StepStatus.READY)
        .filter(Q(run_after__isnull=True) | Q(run_after__lte=now))
        .move(
            StepStatus.RUNNING,
            attempts=F("attempts") + 1,
            worker_id=worker,
            lease_expires_at=now + lease_delta(),
            started_at=now,
            finished_at=None,
        )
    )
    return updated == 1


def drop_connection() -> None:
    """Closes this thread's database connection after a connection error, so the next statement gets a fresh one
    (from the pool, which checks it, or a new connection)."""
    from django.db import connection

    with contextlib.suppress(DatabaseError):
        connection.close()


def through_outage[T](what: str, fn: Callable[[], T], until: float) -> T:
    """Runs ``fn`` until it gets through to the database, on a fresh connection after each connection error,
    until the monotonic time ``until`` (or the end of the shutdown grace) has passed; then re-raises.

    ``fn`` must be safe to run again after a try whose outcome is unknown (one transaction, conditional writes).
    """
    pause = 0.1
    failures = 0
    while True:
        try:
            result = fn()
        except CONNECTION_ERRORS as exc:
            failures += 1
            now = time.monotonic()
            given_up = now + pause >= until or (
                shutdown_requested.is_set() and now >= _shutdown_at[0] + settings.WORKER_SHUTDOWN_GRACE_SECONDS
            )
            if given_up:
                logger.error("%s: the database did not answer in time (%s); giving up", what, exc)
                raise
            if failures == 1:
                logger.warning("%s: database connection lost (%s); retrying on a fresh connection", what, exc)
            drop_connection()
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
            continue
        if failures:
            logger.info("%s: done after %d retr%s", what, failures, "y" if failures == 1 else "ies")
        return result
