"""The HTTP API: one NinjaAPI that mounts each app's router and maps domain errors to responses once."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from ninja import Field, NinjaAPI, Schema
from ninja.errors import AuthenticationError
from ninja.pagination import LimitOffsetPagination
from ninja.security import HttpBearer, SessionAuth

from accounts.models import ApiToken
from approvals.services import ApprovalError
from workflows.models import InvalidTransition
from workflows.services import IdempotencyConflict, WorkflowDisabled


class ErrorOut(Schema):
    detail: Any


def with_errors(responses: dict[int, Any]) -> dict[int, Any]:
    """``responses`` plus the errors every operation may answer: 400 malformed JSON, 401 no or a bad token,
    403 missing scope or permission, 422 a parameter or body that breaks the schema."""
    return {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 422: ErrorOut, **responses}


class Pagination(LimitOffsetPagination):
    """limit/offset with bounds, so absurd values get 422 instead of reaching the database."""

    class Input(Schema):
        limit: int = Field(50, ge=1, le=500)
        offset: int = Field(0, ge=0, le=1_000_000_000)


class TokenAuth(HttpBearer):
    """``Authorization: Bearer cc_...`` with a token from `manage.py create_api_token`."""

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        found = ApiToken.authenticate(token)
        if found is not None:
            request.user = found.user
            request.api_token = found  # type: ignore[attr-defined]
        return found


class StaffSessionAuth(SessionAuth):
    """The admin session of a logged-in staff user (CSRF-checked for unsafe methods)."""

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = super().authenticate(request, key)
        if user is not None and user.is_staff:
            request.api_token = None  # type: ignore[attr-defined]
            return user
        return None


api = NinjaAPI(
    title="CommandCenter API",
    version="1",
    description="Trigger workflows, follow runs, cancel and retry them. Authenticate with an API token.",
    auth=[TokenAuth(), StaffSessionAuth()],
    urls_namespace="api",
)


def require_scope(request: HttpRequest, scope: str) -> None:
    """Tokens carry scopes; a staff session may do what its Django permissions allow."""
    token: ApiToken | None = getattr(request, "api_token", None)
    if token is not None and scope not in token.scopes:
        raise PermissionDenied(f"this API token lacks the {scope!r} scope")


@api.exception_handler(AuthenticationError)
def unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return api.create_response(
        request,
        {"detail": "missing or invalid credentials: send 'Authorization: Bearer <API token>'"},
        status=401,
    )


@api.exception_handler(PermissionDenied)
def forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "permission denied"}, status=403)


@api.exception_handler(WorkflowDisabled)
def disabled(request: HttpRequest, exc: WorkflowDisabled) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc)}, status=409)


@api.exception_handler(InvalidTransition)
def invalid_transition(request: HttpRequest, exc: InvalidTransition) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc), "status": exc.current}, status=409)


@api.exception_handler(IdempotencyConflict)
def idempotency_conflict(request: HttpRequest, exc: IdempotencyConflict) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc), "run_id": str(exc.run.id)}, status=422)


@api.exception_handler(ApprovalError)
def approval_refused(request: HttpRequest, exc: ApprovalError) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc), **exc.details}, status=exc.status_code)


api.add_router("", "workflows.api.router")
api.add_router("", "approvals.api.router")
