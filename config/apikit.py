"""The building blocks every app's API router uses: the error body, the common error responses, pagination,
and the permission check. The root API (config.api) mounts the routers; this module stays below the apps.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from ninja import Field, Schema
from ninja.pagination import LimitOffsetPagination

from accounts.permissions import Operation, refusal


class ErrorOut(Schema):
    detail: Any


def with_errors(responses: dict[int, Any]) -> dict[int, Any]:
    """``responses`` plus the errors every operation may answer: 400 malformed JSON, 401 no or a bad token,
    403 missing scope or permission (or a session request without its CSRF token), 413 a body over
    API_MAX_BODY_BYTES, 422 a parameter or body that breaks the schema, 429 too many wrong tokens."""
    return {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 413: ErrorOut, 422: ErrorOut, 429: ErrorOut, **responses}


class Pagination(LimitOffsetPagination):
    """limit/offset with bounds, so absurd values get 422 instead of reaching the database."""

    class Input(Schema):
        limit: int = Field(50, ge=1, le=500)
        offset: int = Field(0, ge=0, le=1_000_000_000)


def require(request: HttpRequest, operation: Operation) -> None:
    """PermissionDenied (403) unless the user may do ``operation`` and, with a token, its scopes cover it."""
    problem = refusal(request.user, operation, getattr(request, "api_token", None))
    if problem:
        raise PermissionDenied(problem)
