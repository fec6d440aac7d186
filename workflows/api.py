import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse
from ninja import Body, Field, Header, Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import paginate
from pydantic import ConfigDict, ValidationInfo, field_validator, model_validator

from accounts import permissions
from config.apikit import ErrorOut, Pagination, require, with_errors
from config.jsonsafe import STORABLE_OBJECT, QueryText, json_object, unstorable
from workflows import actions, services
from workflows.models import RunStatus, Workflow, WorkflowRun

router = Router(tags=["workflows"])


class TriggerIn(Schema):
    """The trigger body: ``{"context": {...}}`` or ``{"contextJson": {...}}``; ``{}`` means an empty context.

    Unknown fields are refused rather than ignored, so a misspelt ``ctx`` does not start a run without the
    context its sender meant; so are values a context cannot hold: NaN, Infinity and NUL characters.
    """

    # The schema says what the validators below enforce: one of the two fields, and only storable values.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"not": {"required": ["context", "contextJson"]}})

    context: dict[str, Any] = Field(
        default_factory=dict, description="The run's context, an object.", json_schema_extra=STORABLE_OBJECT
    )
    contextJson: dict[str, Any] = Field(
        default_factory=dict,
        description="Alias of context, as older clients send it.",
        json_schema_extra=STORABLE_OBJECT,
    )

    @model_validator(mode="before")
    @classmethod
    def an_object(cls, data: Any) -> Any:
        return json_object(data, "with 'context' (or 'contextJson')")

    @field_validator("context", "contextJson")
    @classmethod
    def storable(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        problem = unstorable(value, str(info.field_name))
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def one_context(self) -> "TriggerIn":
        if {"context", "contextJson"} <= self.model_fields_set:
            raise ValueError("send either context or contextJson, not both")
        return self

    def value(self) -> dict[str, Any]:
        return self.contextJson if "contextJson" in self.model_fields_set else self.context


class Links(Schema):
    self: str
    admin: str
    cancel: str


class RunOut(Schema):
    id: uuid.UUID
    workflow: str
    status: str
    trigger: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    error: str
    trace_id: str
    rerun_of: uuid.UUID | None = Field(None, description="The run this one re-runs, if it is a re-run.")
    links: Links

    @staticmethod
    def resolve_rerun_of(run: WorkflowRun) -> uuid.UUID | None:
        return run.rerun_of_id

    @staticmethod
    def resolve_workflow(run: WorkflowRun) -> str:
        return run.workflow_slug

    @staticmethod
    def resolve_links(run: WorkflowRun) -> dict[str, str]:
        return run_links(run)


class StepOut(Schema):
    key: str
    status: str
    attempts: int
    output: Any
    error: str


class AttemptOut(Schema):
    step: str
    attempt: int
    status: str
    agent_type: str
    action: str
    input: Any
    output: Any
    error_type: str
    error_message: str
    worker_id: str
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None

    @staticmethod
    def resolve_step(attempt: Any) -> str:
        return str(attempt.step.key)


class TransitionOut(Schema):
    from_status: str
    to_status: str
    reason: str
    actor: str
    at: datetime


class RunDetailOut(RunOut):
    context: dict[str, Any]
    rerun_of: uuid.UUID | None = Field(None, alias="rerun_of_id")
    steps: list[StepOut]
    attempts: list[AttemptOut]
    transitions: list[TransitionOut]

    @staticmethod
    def resolve_steps(run: WorkflowRun) -> Any:
        return run.steps.all()

    @staticmethod
    def resolve_attempts(run: WorkflowRun) -> Any:
        return run.attempts.select_related("step").all()

    @staticmethod
    def resolve_transitions(run: WorkflowRun) -> Any:
        return run.transitions.all()


class NodeOut(Schema):
    key: str
    agent: str
    action: str
    depends_on: list[str]
    requires_approval: bool

    @staticmethod
    def resolve_agent(node: Any) -> str:
        return str(node.agent.slug)


class WorkflowOut(Schema):
    slug: str
    name: str
    description: str
    enabled: bool
    version: int


class WorkflowDetailOut(WorkflowOut):
    nodes: list[NodeOut]

    @staticmethod
    def resolve_nodes(workflow: Workflow) -> Any:
        return workflow.nodes.select_related("agent").all()


def run_links(run: WorkflowRun) -> dict[str, str]:
    base = settings.SITE_URL
    return {
        "self": f"{base}/api/runs/{run.id}",
        "admin": base + reverse("admin:workflows_workflowrun_change", args=[run.id]),
        "cancel": f"{base}/api/runs/{run.id}/cancel",
    }


def workflow_or_404(slug: str) -> Workflow:
    # No slug holds a NUL character, and PostgreSQL refuses to compare text with one.
    found = None if "\x00" in slug else Workflow.objects.filter(slug=slug).first()
    if found is None:
        raise HttpError(404, f"workflow {slug!r} not found")
    return found


def run_or_404(run_id: uuid.UUID) -> WorkflowRun:
    found = WorkflowRun.objects.filter(id=run_id).first()
    if found is None:
        raise HttpError(404, f"run {run_id} not found")
    return found


def _token(request: HttpRequest) -> Any:
    """The API token the request authenticated with; None for the console's session."""
    return getattr(request, "api_token", None)


_TRIGGER_BODY = Body(None, description="Omit the body, or send {}, for an empty context.")


@router.post(
    "/workflows/{slug}/trigger",
    response=with_errors({202: RunOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut}),
    summary="Start a run of a workflow",
)
def trigger(
    request: HttpRequest,
    slug: str,
    payload: TriggerIn = _TRIGGER_BODY,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=200),
) -> Status:
    # payload is None only when there is no body at all; a JSON null body is refused by TriggerIn.
    require(request, permissions.TRIGGER)
    found = services.workflow_with_definition(slug)  # one statement for the workflow and its nodes
    if found is None:
        raise HttpError(404, f"workflow {slug!r} not found")
    workflow, definition = found
    run, _ = actions.trigger(
        workflow,
        definition=definition,
        acting_user=request.user,
        context=payload.value() if payload else {},
        channel="api",
        token=_token(request),
        idempotency_key=idempotency_key or None,
    )
    return Status(202, run)


@router.get("/runs", response=with_errors({200: list[RunOut]}), summary="List runs, newest first")
@paginate(Pagination)
def list_runs(request: HttpRequest, status: RunStatus | None = None, workflow: QueryText | None = None) -> Any:
    require(request, permissions.VIEW_RUNS)
    runs = WorkflowRun.objects.select_related("workflow").order_by("-created_at")
    if status:
        runs = runs.filter(status=status)
    if workflow:
        runs = runs.filter(workflow__slug=workflow)
    return runs


@router.get(
    "/runs/{run_id}", response=with_errors({200: RunDetailOut, 404: ErrorOut}), summary="A run with its step attempts"
)
def get_run(request: HttpRequest, run_id: uuid.UUID) -> WorkflowRun:
    require(request, permissions.VIEW_RUNS)
    return run_or_404(run_id)


@router.post(
    "/runs/{run_id}/cancel", response=with_errors({200: RunOut, 404: ErrorOut, 409: ErrorOut}), summary="Cancel a run"
)
def cancel_run(request: HttpRequest, run_id: uuid.UUID) -> WorkflowRun:
    require(request, permissions.OPERATE)
    run = run_or_404(run_id)
    actions.cancel(run, acting_user=request.user, channel="api", token=_token(request))
    return run


@router.post(
    "/runs/{run_id}/retry",
    response=with_errors({200: RunOut, 404: ErrorOut, 409: ErrorOut}),
    summary="Re-run the failed steps",
)
def retry_run(request: HttpRequest, run_id: uuid.UUID) -> WorkflowRun:
    require(request, permissions.OPERATE)
    run = run_or_404(run_id)
    actions.retry_failed_steps(run, acting_user=request.user, token=_token(request))
    return run


@router.post(
    "/runs/{run_id}/rerun",
    response=with_errors({202: RunOut, 404: ErrorOut, 409: ErrorOut}),
    summary="Start a new run of the same workflow with the same context, linked to this one",
)
def rerun_run(request: HttpRequest, run_id: uuid.UUID) -> Status:
    require(request, permissions.OPERATE)
    new_run = actions.rerun(run_or_404(run_id), acting_user=request.user, token=_token(request))
    return Status(202, new_run)


@router.get("/workflows", response=with_errors({200: list[WorkflowOut]}), summary="List workflows")
def list_workflows(request: HttpRequest) -> Any:
    require(request, permissions.VIEW_WORKFLOWS)
    return Workflow.objects.all()


@router.get(
    "/workflows/{slug}",
    response=with_errors({200: WorkflowDetailOut, 404: ErrorOut}),
    summary="A workflow and its steps",
)
def get_workflow(request: HttpRequest, slug: str) -> Workflow:
    require(request, permissions.VIEW_WORKFLOWS)
    return workflow_or_404(slug)
