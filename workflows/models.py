"""The core's models: workflows and their nodes, runs with their transitions, and steps, each run and step
moving only through its move table (``WorkflowRun.transition``, ``RunStep.move``).

About 410 lines: the two move tables and the models they guard belong together.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models.expressions import Combinable
from django.utils import timezone

from workflows import sql
from workflows.port import event


class InvalidTransition(Exception):
    """A status change that the state machine does not allow."""

    def __init__(self, kind: str, current: str, target: str) -> None:
        super().__init__(f"{kind} cannot move from {current} to {target}")
        self.current = current
        self.target = target


class Workflow(models.Model):
    """A named DAG of agent steps that operators trigger; its nodes are WorkflowNode rows."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=1, help_text="Bumped whenever the definition changes.")
    source_file = models.CharField(max_length=500, blank=True, help_text="Definition file it was synced from.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def snapshot(self, nodes: Iterable[WorkflowNode] | None = None) -> dict[str, Any]:
        """The definition as a run keeps it: later edits of the workflow never reach a run in flight.

        ``nodes``: this workflow's nodes with their agents, in order, when the caller has read them already.
        """
        if nodes is None:
            nodes = self.nodes.select_related("agent").order_by("position", "key")
        return {
            "slug": self.slug,
            "name": self.name,
            "version": self.version,
            "nodes": [node.as_definition() for node in nodes],
        }


class WorkflowNode(models.Model):
    """One step of a workflow: which agent runs, with what inputs, after which steps, and its policies."""

    class ApprovalTimeoutAction(models.TextChoices):
        REJECT = "reject"
        APPROVE = "approve"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="nodes")
    key = models.SlugField(max_length=100)
    name = models.CharField(max_length=200, blank=True)
    position = models.PositiveIntegerField(default=0)
    agent = models.ForeignKey("agents.Agent", on_delete=models.PROTECT, related_name="nodes")
    action = models.CharField(max_length=100, blank=True)
    inputs = models.JSONField(default=dict, blank=True, help_text="Template: {{ context.x }}, {{ steps.k.output.y }}")
    depends_on = models.JSONField(default=list, blank=True, help_text="Keys of the steps this one waits for.")
    # Retry policy: attempt n (n >= 2) waits min(backoff * 2**(n-2), backoff_max) seconds, +/- jitter.
    max_attempts = models.PositiveIntegerField(default=1)
    backoff_seconds = models.FloatField(default=1.0)
    backoff_max_seconds = models.FloatField(default=300.0)
    backoff_jitter = models.FloatField(default=0.1, help_text="Fraction of the delay added or removed at random.")
    timeout_seconds = models.FloatField(null=True, blank=True, help_text="Per attempt; empty means the default.")
    # Approval gate
    requires_approval = models.BooleanField(default=False)
    approver_groups = models.JSONField(default=list, blank=True, help_text="Group names; empty means anyone allowed.")
    approver_users = models.JSONField(default=list, blank=True, help_text="Usernames; empty means anyone allowed.")
    required_approvals = models.PositiveIntegerField(default=1)
    approval_timeout_seconds = models.FloatField(null=True, blank=True)
    approval_timeout_action = models.CharField(
        max_length=10, choices=ApprovalTimeoutAction.choices, default=ApprovalTimeoutAction.REJECT
    )
    allow_self_approval = models.BooleanField(default=False)

    class Meta:
        ordering = ["workflow", "position", "key"]
        constraints = [models.UniqueConstraint(fields=["workflow", "key"], name="workflownode_unique_key")]

    def __str__(self) -> str:
        return f"{self.workflow_id}:{self.key}"

    def as_definition(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name or self.key,
            "agent": self.agent.slug,
            "agent_type": self.agent.type,
            "action": self.action,
            "inputs": self.inputs,
            "depends_on": list(self.depends_on),
            "retry": {
                "max_attempts": self.max_attempts,
                "backoff_seconds": self.backoff_seconds,
                "backoff_max_seconds": self.backoff_max_seconds,
                "jitter": self.backoff_jitter,
            },
            "timeout_seconds": self.timeout_seconds,
            "approval": {
                "required": self.requires_approval,
                "groups": list(self.approver_groups),
                "users": list(self.approver_users),
                "required_approvals": self.required_approvals,
                "timeout_seconds": self.approval_timeout_seconds,
                "timeout_action": self.approval_timeout_action,
                "allow_self_approval": self.allow_self_approval,
            },
        }


class RunStatus(models.TextChoices):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING_APPROVAL = "WAITING_APPROVAL"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


TERMINAL_RUN_STATUSES = frozenset({RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.REJECTED})
ACTIVE_RUN_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING_APPROVAL)

# Every move the runner, the approvals and the operator actions can ask for. A run stays PENDING while a step is
# queued and none has started, and a gated root step may be rejected (or expire) in that window.
_RUN_MOVES: dict[str, frozenset[str]] = {
    RunStatus.PENDING: frozenset(
        {RunStatus.RUNNING, RunStatus.WAITING_APPROVAL, RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.REJECTED}
    ),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.WAITING_APPROVAL,
            RunStatus.SUCCESS,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.REJECTED,
        }
    ),
    RunStatus.WAITING_APPROVAL: frozenset(
        {RunStatus.RUNNING, RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.REJECTED}
    ),
    RunStatus.FAILED: frozenset({RunStatus.RUNNING}),  # retry of the failed steps
    RunStatus.SUCCESS: frozenset(),
    RunStatus.CANCELLED: frozenset(),
    RunStatus.REJECTED: frozenset(),
}


class TriggerSource(models.TextChoices):
    API = "api"
    ALERT = "alert"
    ADMIN = "admin"
    RERUN = "rerun"


class WorkflowRun(models.Model):
    """One execution of a workflow, with the definition as it was when triggered.

    Status changes go through ``transition`` (and the helpers that call it), which refuses moves the state
    machine does not allow and writes a RunTransition row. Callers hold the row lock
    (``select_for_update``) inside a transaction.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="runs")
    workflow_version = models.PositiveIntegerField()
    definition = models.JSONField()
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.PENDING)
    trigger = models.CharField(max_length=10, choices=TriggerSource.choices)
    trigger_detail = models.CharField(max_length=300, blank=True, help_text="Token, alert or admin action.")
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    context = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001 - NULL = no key
    request_fingerprint = models.CharField(max_length=64, blank=True)
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns")
    error = models.TextField(blank=True)
    trace_id = models.CharField(max_length=32, blank=True)
    trace_context = models.JSONField(default=dict, blank=True, help_text="W3C carrier that run spans attach to.")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="workflowrun_unique_idempotency_key",
            )
        ]
        indexes = [
            models.Index(fields=["-created_at"], name="run_created_idx"),
            models.Index(fields=["status", "-created_at"], name="run_status_created_idx"),
            models.Index(fields=["workflow", "-created_at"], name="run_workflow_created_idx"),
            models.Index(fields=["trigger", "-created_at"], name="run_trigger_created_idx"),
            models.Index(fields=["trace_id"], name="run_trace_idx"),
        ]

    def __str__(self) -> str:
        # As the console names a run everywhere (breadcrumbs, approval pages, aria-labels): its workflow's slug
        # and the first 8 characters of its id, which the run list shows and its search finds.
        # Lists defer the (large) definition; the workflow they load with the run then gives the slug.
        if "definition" in self.get_deferred_fields() and WorkflowRun.workflow.is_cached(self):
            return f"{self.workflow.slug} run {str(self.id)[:8]}"
        return f"{self.workflow_slug} run {str(self.id)[:8]}"

    @property
    def workflow_slug(self) -> str:
        return str(self.definition.get("slug", ""))

    def node(self, key: str) -> dict[str, Any]:
        """The snapshot definition of one node."""
        for node in self.definition["nodes"]:
            if node["key"] == key:
                return dict(node)
        raise KeyError(f"run {self.id} has no node {key!r}")

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()

    def transition(
        self, target: str, *, reason: str = "", actor: str = "", at: datetime | None = None
    ) -> RunTransition:
        """Moves to ``target`` or raises InvalidTransition; records the change. Caller holds the row lock.

        ``at`` is when the move happened, if not now (a run starts when its first attempt did).
        """
        if target not in _RUN_MOVES[self.status]:
            raise InvalidTransition("run", self.status, target)
        previous = self.status
        now = at or timezone.now()
        self.status = target
        fields = ["status", "updated_at"]
        if target == RunStatus.RUNNING and self.started_at is None:
            self.started_at = now
            fields.append("started_at")
        if target in TERMINAL_RUN_STATUSES:
            self.finished_at = now
            fields.append("finished_at")
        elif previous in TERMINAL_RUN_STATUSES:
            self.finished_at = None
            self.error = ""
            fields += ["finished_at", "error"]
        if target in (RunStatus.FAILED, RunStatus.REJECTED, RunStatus.CANCELLED) and reason:
            self.error = reason[:5000]
            fields.append("error")
        self.save(update_fields=fields)
        transition = RunTransition.objects.create(
            run=self, from_status=previous, to_status=target, reason=reason[:1000], actor=actor[:200], at=now
        )
        run_transitioned(self, previous, target, reason=reason, actor=actor)
        return transition


def _run_transitioned(run: WorkflowRun, previous: str, target: str, *, reason: str, actor: str) -> None: ...


# Published by WorkflowRun.transition; part of the core's port (see workflows.events).
run_transitioned = event("run_transitioned", _run_transitioned)


class RunTransition(models.Model):
    """An audit row for every status change of a run."""

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="transitions")
    from_status = models.CharField(max_length=20, choices=RunStatus.choices, blank=True)  # blank: created
    to_status = models.CharField(max_length=20, choices=RunStatus.choices)
    reason = models.CharField(max_length=1000, blank=True)
    actor = models.CharField(max_length=200, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["run", "at"])]

    def __str__(self) -> str:
        return f"{self.from_status} -> {self.to_status}"


class StepStatus(models.TextChoices):
    PENDING = "PENDING"  # waits for upstream steps
    READY = "READY"  # may be claimed once run_after has passed
    RUNNING = "RUNNING"  # claimed by a worker holding the lease
    WAITING_APPROVAL = "WAITING_APPROVAL"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL_STEP_STATUSES = frozenset({StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.CANCELLED})
OPEN_STEP_STATUSES = (StepStatus.PENDING, StepStatus.READY, StepStatus.RUNNING, StepStatus.WAITING_APPROVAL)

# Every move of a step. A step's attempt history is its AgentRun rows; the run's moves are RunTransition rows.
_STEP_MOVES: dict[str, frozenset[str]] = {
    # Its dependencies succeeded: queued, claimed inline by the worker that finished the last one, or gated.
    StepStatus.PENDING: frozenset(
        {StepStatus.READY, StepStatus.RUNNING, StepStatus.WAITING_APPROVAL, StepStatus.CANCELLED}
    ),
    StepStatus.READY: frozenset({StepStatus.RUNNING, StepStatus.CANCELLED}),  # claimed; its run closed
    # The attempt's outcome; READY again for a retry, or when the attempt was lost or handed back.
    StepStatus.RUNNING: frozenset({StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.READY, StepStatus.CANCELLED}),
    StepStatus.WAITING_APPROVAL: frozenset({StepStatus.READY, StepStatus.CANCELLED}),  # approved; rejected, closed
    StepStatus.SUCCESS: frozenset(),
    StepStatus.FAILED: frozenset({StepStatus.PENDING}),  # retry of the run's failed steps
    StepStatus.CANCELLED: frozenset({StepStatus.PENDING}),  # retry of the run's failed steps
}
# The statuses from which a step may move to each status.
_STEP_SOURCES: dict[str, tuple[str, ...]] = {
    target: tuple(source for source, targets in _STEP_MOVES.items() if target in targets) for target in StepStatus
}


class RunStepQuerySet(models.QuerySet["RunStep"]):
    def move(self, target: str, **fields: Any) -> int:
        """Moves every matching step that may go to ``target`` there, in one UPDATE; returns how many moved.

        Steps in a status the move table does not allow to reach ``target`` are left alone.
        """
        return self.filter(status__in=_STEP_SOURCES[target]).update(status=target, **fields)


class RunStep(models.Model):
    """The state of one node within one run. Its status moves only through ``move`` (one step) and
    ``RunStep.objects....move`` (many, or a conditional claim), which refuse what the move table does not allow;
    each move is one conditional UPDATE (see workflows.runner)."""

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="steps")
    key = models.CharField(max_length=100)
    position = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts started, across retries of the run.")
    attempt_offset = models.PositiveIntegerField(
        default=0,
        help_text="Attempts that do not count against max_attempts (before a run retry, lost or handed back).",
    )
    infrastructure_attempts = models.PositiveIntegerField(
        default=0,
        help_text="Attempts cut short by infrastructure (worker lost, database unreachable, worker shutdown) since "
        "the last run retry; RUNNER_INFRASTRUCTURE_RETRIES bounds them.",
    )
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    run_after = models.DateTimeField(null=True, blank=True, help_text="Earliest start of the next attempt.")
    worker_id = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = RunStepQuerySet.as_manager()

    class Meta:
        ordering = ["position", "key"]
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="runstep_unique_key")]
        indexes = [
            models.Index(fields=["status", "lease_expires_at"], name="runstep_lease_idx"),
            models.Index(fields=["status", "ready_at"], name="runstep_ready_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.key}"

    def move(
        self, target: str, *, guard: dict[str, Any] | models.QuerySet[RunStep] | None = None, **fields: Any
    ) -> bool:
        """Moves this step from ``self.status`` to ``target`` with ``fields`` in one UPDATE; True when it moved.

        Refuses (InvalidTransition) a move the table does not allow. ``guard`` is what must still match the
        step's row for the change to apply (ownership: this worker, this attempt): equality filters as a dict,
        written directly (workflows.sql, the runner's hot path), or a queryset (for expressions such as F());
        by default the step's id alone. On success the plain values are set on this instance too.
        """
        current = guard.get("status", self.status) if isinstance(guard, dict) else self.status
        if target not in _STEP_MOVES[current]:
            raise InvalidTransition("step", current, target)
        if isinstance(guard, models.QuerySet):
            moved = guard.update(status=target, **fields)
        else:
            moved = sql.update(RunStep, guard or {"id": self.pk}, status=target, **fields)
        if not moved:
            return False
        self.status = target
        for name, value in fields.items():
            if not isinstance(value, Combinable):
                setattr(self, name, value)
        return True

    @staticmethod
    def rows_of(run_id: Any) -> list[tuple[int, str, str, int, int]]:
        """(id, key, status, attempts, attempt_offset) of every step of a run, as plain rows (no instances)."""
        rows = sql.select(RunStep, ("id", "key", "status", "attempts", "attempt_offset"), {"run": run_id})
        return rows  # type: ignore[return-value]
