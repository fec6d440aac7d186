"""The HTTP API: one NinjaAPI that mounts each app's router and maps domain errors to responses once."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, AuthorizationError, HttpError
from ninja.security import HttpBearer, SessionAuth

from accounts import throttle
from accounts.models import ApiToken
from approvals.services import ApprovalError
from config.jsonsafe import STORABLE_JSON_SCHEMA, expand_storable
from workflows.models import InvalidTransition
from workflows.services import IdempotencyConflict, WorkflowDisabled


class InvalidCredentials(AuthenticationError):
    """401: no credentials at all, or an Authorization header that is not a valid API token."""

    def __init__(self, message: str, *, presented: bool) -> None:
        super().__init__(401, message)
        self.presented = presented


class TooManyTokenFailures(HttpError):
    """429: this client address presented too many wrong API tokens (accounts/throttle.py)."""

    def __init__(self, wait: int) -> None:
        super().__init__(429, f"too many invalid API tokens from your address; try again in {wait} s")
        self.wait = wait


class CsrfFailed(AuthorizationError):
    """403: a request authenticated by the admin session cookie without the CSRF token that must go with it."""


class TokenAuth(HttpBearer):
    """``Authorization: Bearer cc_...`` with a token from `manage.py create_api_token`.

    Whenever an Authorization header is present it decides: a valid token authenticates, anything else is 401
    at once (never a fall-through to the session and its CSRF check). Wrong tokens count against the client
    address, which is answered 429 past the limit.
    """

    def __call__(self, request: HttpRequest) -> ApiToken | None:
        header = request.headers.get(self.header)
        if header is None:
            return None  # not a token request: the session may authenticate it
        address = throttle.client_address(request)
        wait = throttle.token_wait(address)
        if wait:
            raise TooManyTokenFailures(wait)
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        found = ApiToken.authenticate(value) if scheme.lower() == "bearer" and value else None
        if found is None:
            wait = throttle.token_failed(address, ApiToken.prefix_of(value))
            if wait:
                raise TooManyTokenFailures(wait)
            raise InvalidCredentials(
                "invalid API token: send 'Authorization: Bearer <API token>' with an active token", presented=True
            )
        request.user = found.user
        request.api_token = found  # type: ignore[attr-defined]
        return found

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        return ApiToken.authenticate(token)


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> Any:
        return reason


class StaffSessionAuth(SessionAuth):
    """The admin session of a signed-in, active staff user. CSRF is checked for unsafe methods, and only once
    the session is known to authenticate the request: a request without one gets 401, not a CSRF 403."""

    def __call__(self, request: HttpRequest) -> Any:
        user = request.user
        if not (user.is_authenticated and user.is_active and user.is_staff):
            return None
        if self.csrf and not getattr(request, "_ninja_csrf_exempt", False):
            request.csrf_processing_done = False  # type: ignore[attr-defined]
            check = _CsrfCheck(lambda r: HttpResponse())
            check.process_request(request)
            reason = check.process_view(request, lambda r: HttpResponse(), (), {})
            if reason is not None:
                raise CsrfFailed(
                    403,
                    f"CSRF check failed ({reason}): a request with the admin session cookie must send the "
                    "csrftoken cookie's value in the X-CSRFToken header (or use an API token instead)",
                )
        request.api_token = None  # type: ignore[attr-defined]
        return user

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        return self(request)


class Api(NinjaAPI):
    """The NinjaAPI whose OpenAPI document also says which JSON values can be stored (config/jsonsafe.py)."""

    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> Any:
        schema = super().get_openapi_schema(*args, **kwargs)
        expand_storable(schema)
        schema["components"].setdefault("schemas", {})["StorableJson"] = STORABLE_JSON_SCHEMA
        return schema


api = Api(
    title="CommandCenter API",
    version="1",
    description=(
        "Trigger workflows, follow runs, cancel and retry them, decide approvals. Authenticate with an API token "
        "(Authorization: Bearer ...) or, from the console, the admin session cookie with the X-CSRFToken header. "
        "Every operation needs the same Django permission as in the console; a token's scopes narrow its user's."
    ),
    auth=[TokenAuth(), StaffSessionAuth()],
    urls_namespace="api",
)


@api.exception_handler(AuthenticationError)
def unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    presented = isinstance(exc, InvalidCredentials) and exc.presented
    detail = (
        exc.message
        if isinstance(exc, InvalidCredentials)
        else "missing credentials: send 'Authorization: Bearer <API token>'"
    )
    response = api.create_response(request, {"detail": detail}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="api"' + (', error="invalid_token"' if presented else "")
    return response


@api.exception_handler(TooManyTokenFailures)
def too_many_token_failures(request: HttpRequest, exc: TooManyTokenFailures) -> HttpResponse:
    response = api.create_response(request, {"detail": exc.message}, status=429)
    response["Retry-After"] = str(exc.wait)
    return response


@api.exception_handler(CsrfFailed)
def csrf_failed(request: HttpRequest, exc: CsrfFailed) -> HttpResponse:
    return api.create_response(request, {"detail": exc.message}, status=403)


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
