"""POST /webhooks/grafana: Grafana (payload version "1") and Alertmanager (version "4") notifications.

Answers: 200 ``{"workflowRunIds": [...], "deliveryId": n, "deduplicated": n}``; 401 when authentication
fails; 413 over WEBHOOK_MAX_BODY_BYTES (also once a gzip body is decompressed); 415 for a Content-Type other
than JSON (no Content-Type is read as JSON) or a Content-Encoding other than gzip; 400 for malformed gzip,
UTF-8 or JSON; 422 naming the field that breaks the schema. Content never causes a 5xx: 503 means the
database failed transiently (the sender's retry can succeed), 500 a failure on the service's side; both are
stored with outcome "error" and replayable from the admin. Every authenticated request within the size
limit is stored byte for byte before it is read, whatever it contains. Authentication (HMAC included) is
over the bytes as sent, before any Content-Encoding is decoded.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from alerts import auth, processing
from observability import metrics

logger = logging.getLogger("alerts")


def _too_big(length: int | None) -> JsonResponse:
    limit = settings.WEBHOOK_MAX_BODY_BYTES
    size = f"{length} bytes" if length is not None else "The request body"
    metrics.record_webhook_alert(source="unknown", status="unknown", outcome="rejected")
    return JsonResponse({"detail": f"{size} exceeds the limit of {limit} bytes"}, status=413)


@csrf_exempt
@require_POST
def grafana(request: HttpRequest) -> JsonResponse:
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0  # the middleware has answered 400 already
    if declared > settings.WEBHOOK_MAX_BODY_BYTES:
        return _too_big(declared)
    try:
        body = request.body
    except RequestDataTooBig:
        return _too_big(None)
    if len(body) > settings.WEBHOOK_MAX_BODY_BYTES:
        return _too_big(len(body))
    try:
        auth.authenticate(request.headers, body)
    except auth.AuthenticationFailed as exc:
        logger.warning("alert webhook refused: %s", exc, extra={"event": "webhook.unauthorized"})
        metrics.record_webhook_alert(source="unknown", status="unknown", outcome="unauthorized")
        response = JsonResponse({"detail": f"authentication failed: {exc}"}, status=401)
        if settings.WEBHOOK_TOKEN:
            response["WWW-Authenticate"] = 'Bearer realm="alert webhook"'
        return response
    result = processing.receive(body, request.headers)
    return JsonResponse(result.body, status=result.status)
