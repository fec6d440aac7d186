from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


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
