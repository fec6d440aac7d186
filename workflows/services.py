"""Starting runs: the one function behind the API, the admin, the alert webhook and re-runs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.jsonsafe import bounded
from observability import tracing
from workflows import runner
from workflows.models import RunStatus, RunStep, RunTransition, StepStatus, TriggerSource, Workflow, WorkflowRun

TRIGGER_DETAIL_MAX_LENGTH = WorkflowRun._meta.get_field("trigger_detail").max_length or 300
ACTOR_MAX_LENGTH = RunTransition._meta.get_field("actor").max_length or 200


class WorkflowDisabled(Exception):
    def __init__(self, workflow: Workflow) -> None:
        super().__init__(f"workflow {workflow.slug!r} is disabled")


class IdempotencyConflict(Exception):
    def __init__(self, key: str, run: WorkflowRun) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used for run {run.id} with a different request body")
        self.run = run


def fingerprint(workflow: Workflow, context: dict[str, Any]) -> str:
    canonical = json.dumps({"workflow": workflow.slug, "context": context}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def trigger_workflow(
    workflow: Workflow,
    *,
    context: dict[str, Any],
    trigger: str = TriggerSource.API,
    trigger_detail: str = "",
    user: AbstractBaseUser | AnonymousUser | None = None,
    idempotency_key: str | None = None,
    rerun_of: WorkflowRun | None = None,
    trace_id: str = "",
    trace_context: dict[str, str] | None = None,
) -> tuple[WorkflowRun, bool]:
    """Creates a run from the workflow's current definition and queues its first steps.

    Returns (run, created). With an idempotency key already used for the same request the first run is
    returned and nothing new is created; with a different request IdempotencyConflict is raised.
    """
    if not workflow.enabled:
        raise WorkflowDisabled(workflow)
    trigger_detail = bounded(trigger_detail, TRIGGER_DETAIL_MAX_LENGTH)
    if not trace_id:
        # The run joins the trace of the request (or alert) that triggers it.
        trace_id, trace_context = tracing.new_run_context()
    print_ = fingerprint(workflow, context)
    if idempotency_key:
        existing = WorkflowRun.objects.filter(workflow=workflow, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replay(existing, idempotency_key, print_)
    try:
        with transaction.atomic():
            run = _create(
                workflow,
                context=context,
                trigger=trigger,
                trigger_detail=trigger_detail,
                user=user,
                idempotency_key=idempotency_key,
                request_fingerprint=print_,
                rerun_of=rerun_of,
                trace_id=trace_id,
                trace_context=trace_context or {},
            )
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key won the insert.
        existing = WorkflowRun.objects.get(workflow=workflow, idempotency_key=idempotency_key)
        return _replay(existing, idempotency_key, print_)
    return run, True


def _replay(existing: WorkflowRun, key: str, print_: str) -> tuple[WorkflowRun, bool]:
    if existing.request_fingerprint != print_:
        raise IdempotencyConflict(key, existing)
    return existing, False


def _create(workflow: Workflow, **fields: Any) -> WorkflowRun:
    definition = workflow.snapshot()
    user = fields.pop("user")
    now = timezone.now()
    run = WorkflowRun.objects.create(
        workflow=workflow,
        workflow_version=workflow.version,
        definition=definition,
        status=RunStatus.PENDING,
        triggered_by=user if user is not None and user.is_authenticated else None,
        created_at=now,
        **fields,
    )
    # Steps without dependencies start READY (queued below) unless gated; gates are opened by advance().
    ready = [not node["depends_on"] and not node["approval"]["required"] for node in definition["nodes"]]
    steps = RunStep.objects.bulk_create(
        RunStep(
            run=run,
            key=node["key"],
            position=i,
            status=StepStatus.READY if ready[i] else StepStatus.PENDING,
            ready_at=now if ready[i] else None,
        )
        for i, node in enumerate(definition["nodes"])
    )
    # RunTransition.actor is shorter than trigger_detail (an alert group's names can fill both).
    actor = bounded(getattr(user, "username", "") or fields.get("trigger_detail", ""), ACTOR_MAX_LENGTH)
    RunTransition.objects.create(run=run, from_status="", to_status=RunStatus.PENDING, actor=actor, at=now)
    from workflows import events

    events.run_transitioned(run, "", RunStatus.PENDING, reason=f"triggered via {run.trigger}", actor=actor)
    for step, is_ready in zip(steps, ready, strict=True):
        if is_ready:
            runner.enqueue_with_transaction(step.id)
    if any(not node["depends_on"] and node["approval"]["required"] for node in definition["nodes"]):
        runner.advance(run, now)
    return run


def rerun(run: WorkflowRun, *, user: AbstractBaseUser | AnonymousUser | None = None) -> WorkflowRun:
    """A new run of the same workflow with the same context, linked to the original."""
    new_run, _ = trigger_workflow(
        run.workflow,
        context=run.context,
        trigger=TriggerSource.RERUN,
        trigger_detail=f"re-run of {run.id}",
        user=user,
        rerun_of=run,
    )
    return new_run
