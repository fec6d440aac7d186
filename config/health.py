from django.db import connection
from django.db.utils import DatabaseError
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests; never touches the database (config.middleware lets it through
    during an outage, too)."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve traffic: the database answers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return not_ready(type(exc).__name__)
    return JsonResponse({"status": "ok", "database": "ok"})


def not_ready(error: str) -> JsonResponse:
    """/readyz's answer while the database is unreachable, ``error`` naming the failure."""
    response = JsonResponse({"status": "unavailable", "database": f"unreachable: {error}"}, status=503)
    response["Retry-After"] = "5"
    response["Cache-Control"] = "no-store"
    return response
