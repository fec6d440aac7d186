"""The runner: claims ready steps, executes them under a lease, and moves runs through their DAG.

Our tables are the truth; the task queue only carries "work on step X", at least once. Every claim is a
conditional UPDATE (``status=READY`` -> ``RUNNING``), so a duplicate delivery finds nothing to claim.
Everything that decides what happens next (step finished, failed, lease expired, run cancelled) runs in a
transaction that first locks the run row, so the decisions for one run are serialised across workers.

A worker that finishes a step claims the next ready step of the same run inside that transaction and runs
it directly, so a sequential chain pays no queue latency per step; further ready steps are enqueued for
other workers. A claimed step holds a lease that the executing worker renews; the reaper
(``reap_expired_leases``) closes attempts whose lease expired and re-queues or fails the step per its
retry policy, and re-enqueues READY steps whose queue message was lost (``requeue_stale_ready``).

Faults are not failures. An attempt cut short by infrastructure (its worker died or lost the database for
longer than the lease, or handed it back at shutdown) does not count against the node's max_attempts: the step
is put back under a separate budget, RUNNER_INFRASTRUCTURE_RETRIES (``handle_lost_attempt``). A worker whose
database connection dies renews its lease and records its attempt's outcome on a fresh connection, until the
lease would have run out (``_through_outage``), so a finished attempt's result survives a database restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, partial
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.db.utils import DatabaseError, InterfaceError, OperationalError
from django.utils import timezone
from opentelemetry import context as otel_context

from agents.executors import UnknownAgentType, executor_class
from agents.executors.base import AgentError, StepCancelled, StepContext
from agents.models import Agent, AgentRun
from workflows import events, sql
from workflows.models import (
    ACTIVE_RUN_STATUSES,
    OPEN_STEP_STATUSES,
    InvalidTransition,
    RunStatus,
    RunStep,
    StepStatus,
    WorkflowRun,
)
from workflows.templating import TemplateError, references, render_inputs

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


def lease_delta() -> timedelta:
    return timedelta(seconds=settings.RUNNER_LEASE_SECONDS)


def backoff_delay(retry: dict[str, Any], failed_attempt: int) -> float:
    """Delay before the attempt after ``failed_attempt``: exponential, capped, with +-jitter."""
    delay = min(float(retry["backoff_seconds"]) * 2 ** (failed_attempt - 1), float(retry["backoff_max_seconds"]))
    jitter = float(retry.get("jitter", 0))
    return max(0.0, delay * (1 + random.uniform(-jitter, jitter)))


def enqueue_step(step_id: int, run_after: datetime | None = None) -> None:
    from workflows.tasks import execute_step

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


# --- Claiming and executing -----------------------------------------------------------------------------


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


def run_step(step_id: int) -> None:
    """Entry point of the task: claim the step, run it, and keep going inline while the run has work."""
    worker = worker_id()
    now = timezone.now()
    tries = 0

    def take() -> bool:
        nonlocal tries
        tries += 1
        if claim(step_id, worker, now):
            return True
        # After a try whose answer was lost, the step may be this worker's already (it runs one task at a time).
        return tries > 1 and RunStep.objects.filter(id=step_id, status=StepStatus.RUNNING, worker_id=worker).exists()

    if not _through_outage(f"claiming step {step_id}", take, time.monotonic() + settings.RUNNER_LEASE_SECONDS):
        # A queue whose scheduler rounds times (RQ: to the second) may deliver a deferred retry a little
        # early; put it back for its time rather than leave it to the stale-READY sweep. "Early" is judged
        # at the instant the claim used: judged later, the time may have come in between, and the step
        # would be neither claimed nor put back.
        early = (
            RunStep.objects.filter(id=step_id, status=StepStatus.READY, run_after__gt=now)
            .values_list("run_after", flat=True)
            .first()
        )
        if early is not None:
            enqueue_step(step_id, early)
        return
    claimed: RunStep | int | None = step_id
    agents = AgentLookup()
    while claimed is not None:
        claimed = execute_claimed(claimed, worker, agents)


class AgentLookup:
    """The agents of one inline chain of steps, each read again once it is a second old.

    A chain of short steps on one agent would otherwise read the same row before every step; an operator's
    change to an agent (disabling it, new config) still reaches the next attempt within a second.
    """

    MAX_AGE = 1.0

    def __init__(self) -> None:
        self._rows: dict[str, tuple[float, Agent | None]] = {}

    def get(self, slug: str) -> Agent | None:
        now = time.monotonic()
        cached = self._rows.get(slug)
        if cached is not None and now - cached[0] < self.MAX_AGE:
            return cached[1]
        agent = Agent.objects.filter(slug=slug).first()
        self._rows[slug] = (now, agent)
        return agent


@dataclass
class Outcome:
    status: str  # an AgentRun.Status value, or RELEASED
    output: dict[str, Any] | None = None
    error_type: str = ""
    error_message: str = ""
    permanent: bool = False
    retry_after: float = 0.0  # seconds the remote side asked to wait before the next attempt


RELEASED = "RELEASED"


def template_scope(run: WorkflowRun, template: Any) -> dict[str, Any]:
    """What an inputs template may reference; only the upstream outputs it names are loaded."""
    wanted = {ref.split(".")[1] for ref in references(template) if ref.startswith("steps.")}
    outputs = (
        RunStep.objects.filter(run=run, status=StepStatus.SUCCESS, key__in=wanted).values_list("key", "output")
        if wanted
        else []
    )
    return {
        "context": run.context,
        "run": {"id": str(run.id), "workflow": run.workflow_slug, "trigger": run.trigger},
        "steps": {key: {"output": output} for key, output in outputs},
    }


def execute_claimed(claimed: RunStep | int, worker: str, agents: AgentLookup | None = None) -> RunStep | None:
    """Runs one attempt of a step this worker has claimed; returns the next step it claimed inline.

    ``claimed`` is a step id (claimed from the queue) or the step that ``advance`` claimed inline, which comes
    with its run already loaded. Starting the attempt (its row, its inputs) is retried on a fresh connection
    while the claim's lease lasts, like recording its outcome, so a database restart costs no attempt.
    """
    lookup = agents or AgentLookup()
    tries = 0

    def start() -> tuple[WorkflowRun, RunStep, dict[str, Any], AgentRun, Agent | None, Outcome | None]:
        nonlocal tries
        tries += 1
        return _start_attempt(claimed, worker, lookup, retried=tries > 1)

    until = time.monotonic() + settings.RUNNER_LEASE_SECONDS  # the lease was taken a moment ago, with the claim
    run, step, node, attempt, agent, outcome = _through_outage("starting a step", start, until)
    events.attempt_started(run, step, attempt, node)
    if outcome is None:
        assert agent is not None
        with events.attempt_running(run, step, attempt, node):
            outcome = _supervise(run, step, attempt, node, agent, worker)
    return _finish_attempt(run, step, attempt, node, worker, outcome)


def _start_attempt(
    claimed: RunStep | int, worker: str, agents: AgentLookup, *, retried: bool
) -> tuple[WorkflowRun, RunStep, dict[str, Any], AgentRun, Agent | None, Outcome | None]:
    """Loads what the attempt needs and writes its row; the outcome is set when it cannot run at all."""
    step = claimed if isinstance(claimed, RunStep) else RunStep.objects.select_related("run").get(id=claimed)
    run = step.run
    if run.status == RunStatus.PENDING:
        with transaction.atomic():
            locked = WorkflowRun.objects.select_for_update().get(id=run.id)
            if locked.status == RunStatus.PENDING:
                locked.transition(RunStatus.RUNNING, reason=f"step {step.key} started", actor=worker)
            run = locked
    node = run.node(step.key)
    attempt = AgentRun(
        run=run,
        step=step,
        attempt=step.attempts,
        agent_type=node["agent_type"],
        action=node["action"],
        worker_id=worker,
        lease_expires_at=step.lease_expires_at,
        started_at=timezone.now(),
    )
    outcome: Outcome | None = None
    agent = agents.get(node["agent"])
    attempt.agent = agent
    try:
        attempt.input = render_inputs(node["inputs"], template_scope(run, node["inputs"]))
    except TemplateError as exc:
        outcome = Outcome(AgentRun.Status.FAILED, error_type="TemplateError", error_message=str(exc), permanent=True)
    if outcome is None:
        if agent is None:
            msg = f"agent {node['agent']!r} does not exist"
            outcome = Outcome(AgentRun.Status.FAILED, error_type="AgentUnavailable", error_message=msg, permanent=True)
        elif not agent.enabled:
            msg = f"agent {agent.slug!r} is disabled"
            outcome = Outcome(AgentRun.Status.FAILED, error_type="AgentUnavailable", error_message=msg, permanent=True)
    written = AgentRun.objects.filter(step=step, attempt=step.attempts).first() if retried else None
    if written is None:
        attempt.save(force_insert=True)
    else:  # a try whose INSERT got through although its answer was lost
        attempt = written
        attempt.run, attempt.step, attempt.agent = run, step, agent
    return run, step, node, attempt, agent, outcome


def _supervise(
    run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any], agent: Agent, worker: str
) -> Outcome:
    """Runs the executor in a thread while this thread renews the lease and enforces the timeout."""
    timeout = float(node.get("timeout_seconds") or settings.RUNNER_DEFAULT_TIMEOUT_SECONDS)
    ctx = StepContext(
        run_id=str(run.id),
        workflow=run.workflow_slug,
        step_key=step.key,
        attempt=step.attempts,
        deadline=time.monotonic() + timeout,
    )
    try:
        executor = executor_class(agent.type)(agent.config)
    except UnknownAgentType as exc:
        return Outcome(AgentRun.Status.FAILED, error_type="AgentUnavailable", error_message=str(exc), permanent=True)
    box: dict[str, Any] = {}
    parent_context = otel_context.get_current()

    def target() -> None:
        token = otel_context.attach(parent_context)
        try:
            box["output"] = executor.execute(node["action"], attempt.input, ctx)
        except BaseException as exc:
            box["error"] = exc
        finally:
            otel_context.detach(token)
            connections.close_all()

    thread = threading.Thread(target=target, name=f"step-{step.id}-{step.attempts}", daemon=True)
    thread.start()
    renew_every = min(settings.RUNNER_LEASE_SECONDS / 3, 2.0)
    next_renewal = time.monotonic() + renew_every
    while True:
        now = time.monotonic()
        wake = min(next_renewal, ctx.deadline)
        if shutdown_requested.is_set():
            wake = min(wake, _shutdown_at[0] + settings.WORKER_SHUTDOWN_GRACE_SECONDS)
        thread.join(max(0.0, wake - now))
        if not thread.is_alive():
            break
        now = time.monotonic()
        if now >= ctx.deadline:
            ctx.cancelled.set()
            return Outcome(
                AgentRun.Status.TIMED_OUT,
                error_type="StepTimeout",
                error_message=f"step did not finish within its timeout of {timeout:g}s",
            )
        if shutdown_requested.is_set() and now >= _shutdown_at[0] + settings.WORKER_SHUTDOWN_GRACE_SECONDS:
            ctx.cancelled.set()
            return Outcome(RELEASED, error_type="WorkerShutdown", error_message="released: worker shutting down")
        if now >= next_renewal:
            renewed = _renew_lease(step, attempt, worker)
            if renewed is False:
                ctx.cancelled.set()
                return Outcome(AgentRun.Status.CANCELLED, error_type="LeaseLost", error_message="step taken away")
            # Unreachable database (None): the executor goes on and the renewal is tried again soon, on a
            # fresh connection; only the reaper takes the step away, once the lease has run out.
            next_renewal = now + (renew_every if renewed else min(renew_every, 0.5))
    if "error" in box:
        return _classify(box["error"])
    output = box.get("output")
    if not isinstance(output, dict):
        msg = f"agent returned {type(output).__name__}, expected a JSON object"
        return Outcome(AgentRun.Status.FAILED, error_type="InvalidOutput", error_message=msg, permanent=True)
    try:
        json.dumps(output)
    except (TypeError, ValueError) as exc:
        msg = f"agent output is not JSON-serialisable: {exc}"
        return Outcome(AgentRun.Status.FAILED, error_type="InvalidOutput", error_message=msg, permanent=True)
    return Outcome(AgentRun.Status.SUCCESS, output=output)


def _classify(exc: BaseException) -> Outcome:
    if isinstance(exc, StepCancelled):
        return Outcome(AgentRun.Status.CANCELLED, error_type="StepCancelled", error_message=str(exc))
    permanent = bool(getattr(exc, "permanent", False)) if isinstance(exc, AgentError) else False
    retry_after = float(exc.retry_after or 0.0) if isinstance(exc, AgentError) else 0.0
    error_type = type(exc).__name__
    return Outcome(
        AgentRun.Status.FAILED,
        error_type=error_type,
        error_message=str(exc)[:5000],
        permanent=permanent,
        retry_after=retry_after,
    )


def _renew_lease(step: RunStep, attempt: AgentRun, worker: str) -> bool | None:
    """Extends the lease: True, or False when the step was taken away, or None when the database did not answer.

    The renewal matches the step whatever its lease says, so one that gets through after an outage keeps the
    attempt as long as the reaper has not taken it.
    """
    expires = timezone.now() + lease_delta()
    try:
        renewed = RunStep.objects.filter(
            id=step.id, status=StepStatus.RUNNING, worker_id=worker, attempts=step.attempts
        ).update(lease_expires_at=expires)
        if renewed:
            AgentRun.objects.filter(id=attempt.id).update(lease_expires_at=expires)
    except CONNECTION_ERRORS as exc:
        logger.warning("could not renew the lease of step %s (%s); the step goes on", step.key, exc)
        drop_connection()
        return None
    if renewed:
        step.lease_expires_at = expires
    return renewed == 1


def drop_connection() -> None:
    """Closes this thread's database connection after a connection error, so the next statement gets a fresh one
    (from the pool, which checks it, or a new connection)."""
    from django.db import connection

    with contextlib.suppress(DatabaseError):
        connection.close()


def _through_outage[T](what: str, fn: Callable[[], T], until: float) -> T:
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


def _close_attempt(attempt: AgentRun, outcome: Outcome, now: datetime) -> bool:
    """Records the attempt's outcome unless someone (the reaper) closed it first."""
    attempt.status = AgentRun.Status.CANCELLED if outcome.status == RELEASED else outcome.status
    attempt.output = outcome.output
    attempt.error_type = outcome.error_type
    attempt.error_message = outcome.error_message
    attempt.finished_at = now
    attempt.duration_seconds = (now - attempt.started_at).total_seconds()
    attempt.lease_expires_at = None
    return bool(
        sql.update(
            AgentRun,
            {"id": attempt.id, "status": AgentRun.Status.RUNNING},
            status=attempt.status,
            output=attempt.output,
            error_type=attempt.error_type,
            error_message=attempt.error_message,
            finished_at=now,
            duration_seconds=attempt.duration_seconds,
            lease_expires_at=None,
        )
    )


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


def _finish_attempt(
    run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any], worker: str, outcome: Outcome
) -> RunStep | None:
    """Records the attempt's outcome and moves the run on; returns the next step claimed inline, if any.

    A connection that dies meanwhile is replaced and the recording tried again until the lease would have run
    out, so a database restart does not throw a finished attempt's result away. A try whose COMMIT got through
    although its answer was lost leaves nothing for the next try to write: every write is conditional on this
    worker still holding the attempt. The step that try claimed inline is then found in the step rows.
    """
    deadline = time.monotonic()
    if step.lease_expires_at is not None:
        deadline += max(0.0, (step.lease_expires_at - timezone.now()).total_seconds())
    tries = 0

    def record() -> RunStep | None:
        nonlocal tries
        tries += 1
        if tries > 1:
            closed = AgentRun.objects.filter(id=attempt.id).values_list("status", flat=True).first()
            if closed is not None and closed != AgentRun.Status.RUNNING:
                return _claimed_by_lost_commit(run, step, worker) if closed == AgentRun.Status.SUCCESS else None
        return _record_outcome(run, step, attempt, node, worker, outcome)

    return _through_outage(f"recording attempt {attempt.attempt} of step {step.key}", record, deadline)


def _claimed_by_lost_commit(run: WorkflowRun, step: RunStep, worker: str) -> RunStep | None:
    """The step of ``run`` that a committed try of ``_finish_attempt`` claimed inline for this worker, if any.

    This worker runs one step of a run at a time, so another step of the run RUNNING under its name is that claim.
    """
    claimed = RunStep.objects.filter(run_id=run.id, status=StepStatus.RUNNING, worker_id=worker).exclude(id=step.id)
    found = claimed.first()
    if found is not None:
        found.run = run
    return found


def _record_outcome(
    run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any], worker: str, outcome: Outcome
) -> RunStep | None:
    with transaction.atomic():
        lock_run(run)
        now = timezone.now()
        # Each outcome is written by one conditional UPDATE that matches only while this worker still holds
        # this attempt: a cancelled, failed-elsewhere or reaped step is left alone.
        mine: dict[str, Any] = {
            "id": step.id,
            "status": StepStatus.RUNNING,
            "worker_id": worker,
            "attempts": attempt.attempt,
        }
        released = {"lease_expires_at": None, "worker_id": ""}
        owned: bool | int
        if outcome.status == RELEASED:
            owned = handle_lost_attempt(
                run,
                step,
                node,
                outcome.error_type,
                outcome.error_message,
                now,
                guard=RunStep.objects.filter(**mine),
                immediate=True,
            )
        elif outcome.status == AgentRun.Status.SUCCESS:
            # Written directly rather than through the ORM: this runs once for every step (workflows/sql.py).
            owned = step.move(
                StepStatus.SUCCESS,
                guard=mine,
                output=outcome.output,
                error="",
                finished_at=now,
                **released,
            )
        else:
            owned = handle_failure(
                run,
                step,
                node,
                outcome.error_type,
                outcome.error_message,
                outcome.permanent,
                now,
                guard=RunStep.objects.filter(**mine),
                retry_after=outcome.retry_after,
            )
        if not owned:
            current = RunStep.objects.filter(id=step.id).values_list("status", flat=True).first()
            outcome = Outcome(
                AgentRun.Status.CANCELLED,
                output=outcome.output,
                error_type=outcome.error_type or "StepNoLongerOwned",
                error_message=outcome.error_message
                or f"step became {current} while this attempt ran; result discarded",
            )
        if _close_attempt(attempt, outcome, now):
            events.attempt_finished(run, step, attempt, node)
        if owned and outcome.status == AgentRun.Status.SUCCESS:
            return advance(run, now, inline_worker=worker)
        return None


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


# --- Operator actions -----------------------------------------------------------------------------------


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


# --- Maintenance ----------------------------------------------------------------------------------------


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

    from workflows.tasks import execute_step

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
        exception_class_path=f"{WorkerLost.__module__}.{WorkerLost.__qualname__}",
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

    from workflows.tasks import execute_step

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
