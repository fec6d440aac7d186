from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from config.outage import OUTAGE, Admission


class BodySizeLimitMiddleware:
    """Answers 413 before anything reads a request body larger than API_MAX_BODY_BYTES.

    Django itself would raise RequestDataTooBig deep inside the view and answer 400; clients deserve the
    status that says what is wrong. Bodies without a Content-Length are capped by Django's own limit.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            return JsonResponse({"detail": f"Content-Length {raw!r} is not a number"}, status=400)
        limit = settings.API_MAX_BODY_BYTES
        if length > limit:
            return JsonResponse(
                {"detail": f"Request body of {length} bytes exceeds the limit of {limit} bytes"}, status=413
            )
        return self.get_response(request)


DATABASE_UNAVAILABLE = (
    "The database is unreachable, so this request could not be served. It is safe to retry in a few seconds."
)


def database_unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 with Retry-After and a short explanation: JSON for the API and webhooks, plain text elsewhere."""
    if request.path.startswith(("/api/", "/webhooks/")) or "json" in request.headers.get("Accept", ""):
        response: HttpResponse = JsonResponse(
            {"detail": DATABASE_UNAVAILABLE, "error": "database_unavailable"}, status=503
        )
    else:
        response = HttpResponse(DATABASE_UNAVAILABLE + "\n", status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = "5"
    response["Cache-Control"] = "no-store"
    return response


def is_database_outage(exc: BaseException | None) -> bool:
    """A connection-level database failure (server down, restarting, connection killed), not a bad query."""
    from django.db.utils import InterfaceError, OperationalError

    return isinstance(exc, OperationalError | InterfaceError)


class DatabaseUnavailableMiddleware:
    """Answers 503 with Retry-After and a clear body, never a 500 and a traceback, while the database is unreachable.

    Once this process has seen the server refuse a connection (config/outage.py), requests are answered 503 at
    once instead of each waiting for a connection while holding a web thread; one request at a time, at most
    one a second, is let through to find out whether the server is back. /healthz and /metrics need no
    database and are never held back.

    Views that hit a dead connection raise OperationalError/InterfaceError; this turns them into the same 503.
    Failures outside views (for instance the session middleware saving a session) reach
    config.urls.handler500, which answers the same way. The broken connection is closed so the next request
    in this process connects afresh.
    """

    DATABASE_FREE_PATHS = frozenset({"/healthz", "/metrics"})

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in self.DATABASE_FREE_PATHS:
            return self.get_response(request)
        admission = OUTAGE.admit()
        if admission is Admission.REFUSE:
            return self.refuse(request, OUTAGE.error)
        if admission is Admission.PROBE:
            from django.db import connection
            from django.db.utils import DatabaseError

            try:
                connection.ensure_connection()
            except DatabaseError as exc:
                OUTAGE.probed(reachable=False)
                connection.close_if_unusable_or_obsolete()
                return self.refuse(request, type(exc).__name__)
            OUTAGE.probed(reachable=True)
        return self.get_response(request)

    @staticmethod
    def refuse(request: HttpRequest, error: str) -> HttpResponse:
        if request.path_info == "/readyz":
            from config.health import not_ready

            return not_ready(error)
        return database_unavailable_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_database_outage(exception):
            return None
        import logging

        from django.db import connections

        logging.getLogger("config.database").warning(
            "database unavailable while serving %s %s: %s",
            request.method,
            request.path,
            type(exception).__name__,
            extra={"event": "database.unavailable"},
        )
        for conn in connections.all(initialized_only=True):
            conn.close_if_unusable_or_obsolete()
        return database_unavailable_response(request)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: no traceback or setting ever reaches the client; a database outage is a 503."""
    import sys

    exc = sys.exc_info()[1]
    if is_database_outage(exc):
        return database_unavailable_response(request)
    body = "Internal server error. The failure was logged; the request may be retried later."
    if request.path.startswith(("/api/", "/webhooks/")):
        return JsonResponse({"detail": body, "error": "internal_error"}, status=500)
    return HttpResponse(body + "\n", status=500, content_type="text/plain; charset=utf-8")
