"""Supervision of an attempt: the task's entry point claims a step, runs its executor in a thread while this
thread renews the lease and enforces the timeout, and records the outcome, retrying the recording on a fresh
connection while the lease lasts (``lease.through_outage``), so a database restart costs no finished attempt.

A worker that finishes a step claims the next ready step of the same run inside the recording transaction, writes
its attempt's row there too, and runs it directly, so a sequential chain pays no queue latency per step. A step
taken from the queue gets its attempt's row in the claim's transaction likewise.

About 440 lines: one attempt's life from claim to recorded outcome, kept whole because its recovery paths
(outage retries, a commit whose answer was lost, the ownership checks) read only side by side.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone
from opentelemetry import context as otel_context

from agents.executors import UnknownAgentType, executor_class
from agents.executors.base import AgentError, StepCancelled, StepContext
from agents.models import Agent, AgentRun
from workflows import events, sql
from workflows.models import (
    RunStatus,
    RunStep,
    StepStatus,
    WorkflowRun,
)
from workflows.runner.lease import (
    CONNECTION_ERRORS,
    _shutdown_at,
    claim,
    drop_connection,
    enqueue_step,
    lease_delta,
    logger,
    shutdown_requested,
    through_outage,
    worker_id,
)
from workflows.runner.settling import advance, handle_failure, handle_lost_attempt, lock_run
from workflows.templating import TemplateError, references, render_inputs


def run_step(step_id: int) -> None:
    """Entry point of the task: claim the step, run it, and keep going inline while the run has work."""
    worker = worker_id()
    now = timezone.now()
    agents = AgentLookup()
    tries = 0

    def take() -> Started | None:
        nonlocal tries
        tries += 1
        # The attempt's row is written with the claim: one transaction, and no step is RUNNING without its attempt.
        with transaction.atomic():
            if claim(step_id, worker, now):
                return _start_attempt(step_id, worker, agents, retried=False)
        # After a try whose answer was lost, the step may be this worker's already (it runs one task at a time).
        if tries > 1 and RunStep.objects.filter(id=step_id, status=StepStatus.RUNNING, worker_id=worker).exists():
            return _start_attempt(step_id, worker, agents, retried=True)
        return None

    started = through_outage(f"claiming step {step_id}", take, time.monotonic() + settings.RUNNER_LEASE_SECONDS)
    if started is None:
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
    claimed: Started | RunStep | int | None = started
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


class Started(NamedTuple):
    """An attempt whose row is written; ``outcome`` is set when it cannot run at all."""

    run: WorkflowRun
    step: RunStep
    node: dict[str, Any]
    attempt: AgentRun
    agent: Agent | None
    outcome: Outcome | None


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


def execute_claimed(
    claimed: Started | RunStep | int, worker: str, agents: AgentLookup | None = None
) -> Started | RunStep | None:
    """Runs one attempt of a step this worker has claimed; returns the next step it claimed inline.

    ``claimed`` is usually ``Started``: the attempt's row was written in the transaction that claimed the step
    (from the queue, or inline when the previous step's outcome was recorded). Otherwise it is a step id or a
    step (with its run loaded) whose claim committed although its answer was lost: its attempt's row, if that
    commit wrote one, is looked up before one is written. Starting the attempt and moving a PENDING run to
    RUNNING are retried on a fresh connection while the claim's lease lasts, like recording the outcome, so a
    database restart costs no attempt.
    """
    lookup = agents or AgentLookup()
    until = time.monotonic() + settings.RUNNER_LEASE_SECONDS  # the lease was taken a moment ago, with the claim
    if isinstance(claimed, Started):
        started = claimed
    else:
        step_or_id = claimed
        started = through_outage(
            "starting a step", lambda: _start_attempt(step_or_id, worker, lookup, retried=True), until
        )
    run, step, node, attempt, agent, outcome = started
    if run.status == RunStatus.PENDING:
        through_outage("starting a run", lambda: _mark_running(run, step, attempt, worker), until)
    events.attempt_started(run, step, attempt, node)
    if outcome is None:
        assert agent is not None
        with events.attempt_running(run, step, attempt, node):
            outcome = _supervise(run, step, attempt, node, agent, worker)
    return _finish_attempt(run, step, attempt, node, worker, outcome, lookup)


def _mark_running(run: WorkflowRun, step: RunStep, attempt: AgentRun, worker: str) -> None:
    """Moves the run of its first started step from PENDING to RUNNING, under the run's lock; the run started
    when that attempt did.

    A transaction of its own, after the claim's: the claim holds the step's row, and taking the run's lock
    after it would invert the order in which the run's other writers (cancel, a failing parallel step) take them.
    """
    with transaction.atomic():
        lock_run(run)
        if run.status == RunStatus.PENDING:
            run.transition(RunStatus.RUNNING, reason=f"step {step.key} started", actor=worker, at=attempt.started_at)


def _start_attempt(claimed: RunStep | int, worker: str, agents: AgentLookup, *, retried: bool) -> Started:
    """Loads what the attempt needs and writes its row, in the caller's transaction if there is one.

    With ``retried``, a row that an earlier try wrote (its commit got through, its answer was lost) is taken.
    """
    step = claimed if isinstance(claimed, RunStep) else RunStep.objects.select_related("run").get(id=claimed)
    run = step.run
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
    return Started(run, step, node, attempt, agent, outcome)


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


def _finish_attempt(
    run: WorkflowRun,
    step: RunStep,
    attempt: AgentRun,
    node: dict[str, Any],
    worker: str,
    outcome: Outcome,
    agents: AgentLookup,
) -> Started | RunStep | None:
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

    def record() -> Started | RunStep | None:
        nonlocal tries
        tries += 1
        if tries > 1:
            closed = AgentRun.objects.filter(id=attempt.id).values_list("status", flat=True).first()
            if closed is not None and closed != AgentRun.Status.RUNNING:
                return _claimed_by_lost_commit(run, step, worker) if closed == AgentRun.Status.SUCCESS else None
        return _record_outcome(run, step, attempt, node, worker, outcome, agents)

    return through_outage(f"recording attempt {attempt.attempt} of step {step.key}", record, deadline)


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
    run: WorkflowRun,
    step: RunStep,
    attempt: AgentRun,
    node: dict[str, Any],
    worker: str,
    outcome: Outcome,
    agents: AgentLookup,
) -> Started | None:
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
            inline = advance(run, now, inline_worker=worker)
            # The next step's attempt row is written with its claim, in this transaction.
            return None if inline is None else _start_attempt(inline, worker, agents, retried=False)
        return None
