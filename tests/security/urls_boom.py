"""The service's URLs plus one view that fails with secrets in its locals, for the 500-page test."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import urlpatterns as service_urlpatterns


def boom(request: HttpRequest) -> HttpResponse:
    password = "LOCAL-S3CRET-VALUE"  # noqa: F841 - what a traceback page would show
    raise RuntimeError(f"failed while holding {settings.SECRET_KEY[:4]}")


urlpatterns = [path("boom", boom), path("api/boom", boom), *service_urlpatterns]
handler500 = "config.middleware.server_error"
