"""Starting runs: the one function behind the API, the admin, the alert webhook and re-runs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.jsonsafe import bounded
from workflows import events, runner
from workflows.models import (
    RunStatus,
    RunStep,
    RunTransition,
    StepStatus,
    TriggerSource,
    Workflow,
    WorkflowNode,
    WorkflowRun,
)

TRIGGER_DETAIL_MAX_LENGTH = WorkflowRun._meta.get_field("trigger_detail").max_length or 300
ACTOR_MAX_LENGTH = RunTransition._meta.get_field("actor").max_length or 200


class WorkflowDisabled(Exception):
    def __init__(self, workflow: Workflow) -> None:
        super().__init__(f"workflow {workflow.slug!r} is disabled")


class IdempotencyConflict(Exception):
    def __init__(self, key: str, run: WorkflowRun) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used for run {run.id} with a different request body")
        self.run = run


def workflow_with_definition(slug: str) -> tuple[Workflow, dict[str, Any]] | None:
    """The workflow ``slug`` and its definition as a run keeps it, read in one statement; None if there is none.

    The trigger's one read: the nodes, each joined with its workflow and its agent. A workflow without nodes
    has no row there and is read on its own.
    """
    if "\x00" in slug:  # no slug holds a NUL character, and PostgreSQL refuses to compare text with one
        return None
    nodes = list(
        WorkflowNode.objects.filter(workflow__slug=slug).select_related("workflow", "agent").order_by("position", "key")
    )
    workflow = nodes[0].workflow if nodes else Workflow.objects.filter(slug=slug).first()
    return None if workflow is None else (workflow, workflow.snapshot(nodes))


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
    definition: dict[str, Any] | None = None,
) -> tuple[WorkflowRun, bool]:
    """Creates a run from the workflow's current definition and queues its first steps.

    ``definition``: ``workflow.snapshot()`` when the caller has read it already (workflow_with_definition).
    Returns (run, created). With an idempotency key already used for the same request the first run is
    returned and nothing new is created; with a different request IdempotencyConflict is raised. The key is
    checked by the unique constraint on (workflow, idempotency_key) when the run is inserted, not by a query
    before: a replay's insert fails and its transaction is rolled back before anything else is written.
    """
    if not workflow.enabled:
        raise WorkflowDisabled(workflow)
    trigger_detail = bounded(trigger_detail, TRIGGER_DETAIL_MAX_LENGTH)
    if not trace_id:
        # The run joins the trace of the request (or alert) that triggers it.
        trace_id, trace_context = events.telemetry.new_run_context()
    print_ = fingerprint(workflow, context)
    try:
        with transaction.atomic():
            run = _create(
                workflow,
                definition=definition or workflow.snapshot(),
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
        # The key was used before, by an earlier request or by a concurrent one that won the insert.
        if not idempotency_key:
            raise
        existing = WorkflowRun.objects.filter(workflow=workflow, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return _replay(existing, idempotency_key, print_)
    return run, True


def _replay(existing: WorkflowRun, key: str, print_: str) -> tuple[WorkflowRun, bool]:
    if existing.request_fingerprint != print_:
        raise IdempotencyConflict(key, existing)
    return existing, False


def _create(workflow: Workflow, *, definition: dict[str, Any], **fields: Any) -> WorkflowRun:
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
