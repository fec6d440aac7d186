from django.contrib import admin
from django.urls import include, path

from config.api import api
from config.health import healthz, readyz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("api/", api.urls),
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
]
