"""Approval requests over the API: list and read them, approve or reject with a comment."""

import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse
from ninja import Body, Field, Query, Router, Schema
from ninja.errors import HttpError
from ninja.pagination import paginate
from pydantic import ConfigDict, field_validator, model_validator

from accounts import permissions
from approvals import services
from approvals.models import ApprovalDecision, ApprovalRequest
from config.apikit import ErrorOut, Pagination, require, with_errors
from config.jsonsafe import NO_NUL, QueryText, json_object, unstorable

router = Router(tags=["approvals"])


class DecisionConflictOut(Schema):
    detail: str
    status: str
    decided_by: str | None = None
    decided_at: str | None = None


class DecisionIn(Schema):
    """``{"comment": "..."}``; no body, or ``{}``, means no comment. Unknown fields are refused, so a misspelt
    comment is not silently dropped from the audit trail."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field(
        "", max_length=5000, description="Why; required to reject.", json_schema_extra={"pattern": NO_NUL}
    )

    @model_validator(mode="before")
    @classmethod
    def an_object(cls, data: Any) -> Any:
        return json_object(data, 'e.g. {"comment": "..."}')

    @field_validator("comment")
    @classmethod
    def storable(cls, value: str) -> str:
        problem = unstorable(value, "comment")
        if problem:
            raise ValueError(problem)
        return value


class RejectIn(DecisionIn):
    """``{"comment": "why"}``: a reject needs a reason. The schema says so; ``decide`` enforces it after checking
    who may decide and whether the request is still open, so those refusals (403, 404, 409) come first."""

    model_config = ConfigDict(
        json_schema_extra={
            "required": ["comment"],
            "properties": {
                "comment": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 5000,
                    "pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$",
                    "description": "Why the step is rejected: some text besides spaces.",
                }
            },
        }
    )


class DecisionOut(Schema):
    user: str
    decision: str
    comment: str
    channel: str
    decided_at: datetime
    wait_seconds: float

    @staticmethod
    def resolve_user(row: ApprovalDecision) -> str:
        return str(row.user.username)


class ApprovalLinks(Schema):
    self: str
    admin: str
    run: str
    approve: str
    reject: str


class ApprovalOut(Schema):
    id: int
    run_id: uuid.UUID
    workflow: str
    step: str = Field(..., alias="node_key")
    status: str
    requested_at: datetime
    expires_at: datetime | None
    timeout_action: str
    required_approvals: int
    approvals: int
    approver_groups: list[str]
    approver_users: list[str]
    allow_self_approval: bool
    decided_at: datetime | None
    decided_by: str | None
    decision_comment: str
    channel: str
    wait_seconds: float | None
    decisions: list[DecisionOut]
    links: ApprovalLinks

    @staticmethod
    def resolve_workflow(req: ApprovalRequest) -> str:
        return req.run.workflow_slug

    @staticmethod
    def resolve_approvals(req: ApprovalRequest) -> int:
        return sum(1 for d in req.decisions.all() if d.decision == ApprovalDecision.Decision.APPROVE)

    @staticmethod
    def resolve_decided_by(req: ApprovalRequest) -> str | None:
        return req.decided_by.username if req.decided_by else None

    @staticmethod
    def resolve_decisions(req: ApprovalRequest) -> Any:
        return req.decisions.all()

    @staticmethod
    def resolve_links(req: ApprovalRequest) -> dict[str, str]:
        base = settings.SITE_URL
        return {
            "self": f"{base}/api/approvals/{req.pk}",
            "admin": base + reverse("admin:approvals_approvalrequest_change", args=[req.pk]),
            "run": f"{base}/api/runs/{req.run_id}",
            "approve": f"{base}/api/approvals/{req.pk}/approve",
            "reject": f"{base}/api/approvals/{req.pk}/reject",
        }


ApprovalStatus = ApprovalRequest.Status


class ApprovalFilters(Schema):
    status: ApprovalStatus | None = None
    workflow: QueryText | None = None
    run: uuid.UUID | None = None


def _requests() -> Any:
    return ApprovalRequest.objects.select_related("run", "decided_by").prefetch_related("decisions__user")


def _not_found(approval_id: int) -> HttpError:
    return HttpError(404, f"approval request {approval_id} not found")


def approval_or_404(approval_id: int) -> ApprovalRequest:
    found = _requests().filter(id=approval_id).first()
    if found is None:
        raise _not_found(approval_id)
    return found


@router.get(
    "/approvals", response=with_errors({200: list[ApprovalOut]}), summary="List approval requests, newest first"
)
@paginate(Pagination)
def list_approvals(request: HttpRequest, filters: Query[ApprovalFilters]) -> Any:
    require(request, permissions.VIEW_APPROVALS)
    found = _requests().order_by("-requested_at")
    if filters.status:
        found = found.filter(status=filters.status)
    if filters.workflow:
        found = found.filter(run__workflow__slug=filters.workflow)
    if filters.run:
        found = found.filter(run_id=filters.run)
    return found


@router.get(
    "/approvals/{approval_id}", response=with_errors({200: ApprovalOut, 404: ErrorOut}), summary="An approval request"
)
def get_approval(request: HttpRequest, approval_id: int) -> ApprovalRequest:
    require(request, permissions.VIEW_APPROVALS)
    return approval_or_404(approval_id)


def _decide(request: HttpRequest, approval_id: int, decision: str, payload: DecisionIn | None) -> ApprovalRequest:
    # payload is None only when there is no body at all; a JSON null body is refused by DecisionIn.
    require(request, permissions.DECIDE)
    try:
        services.decide(
            approval_id,
            acting_user=request.user,
            decision=decision,
            comment=payload.comment if payload else "",
            channel=ApprovalDecision.Channel.API,
        )
    except ApprovalRequest.DoesNotExist:
        raise _not_found(approval_id) from None
    return approval_or_404(approval_id)


_APPROVE_BODY = Body(None, description='Optional: {"comment": "..."}; no body means no comment.')
_REJECT_BODY = Body(None, description='{"comment": "why"}: the reason is required.')
_DECISION_RESPONSES = {200: ApprovalOut, 403: ErrorOut, 404: ErrorOut, 409: DecisionConflictOut, 422: ErrorOut}


@router.post(
    "/approvals/{approval_id}/approve",
    response=with_errors(_DECISION_RESPONSES),
    summary="Approve a gated step (counts toward its quorum)",
)
def approve(request: HttpRequest, approval_id: int, payload: DecisionIn = _APPROVE_BODY) -> ApprovalRequest:
    return _decide(request, approval_id, ApprovalDecision.Decision.APPROVE, payload)


@router.post(
    "/approvals/{approval_id}/reject",
    response=with_errors(_DECISION_RESPONSES),
    summary="Reject a gated step; the run is REJECTED (a comment with the reason is required)",
    openapi_extra={"requestBody": {"required": True}},
)
def reject(request: HttpRequest, approval_id: int, payload: RejectIn = _REJECT_BODY) -> ApprovalRequest:
    return _decide(request, approval_id, ApprovalDecision.Decision.REJECT, payload)
