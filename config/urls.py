from django.contrib import admin
from django.urls import include, path

from config.api import api
from config.health import healthz, readyz
from observability.webhooks import grafana as grafana_webhook

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("api/", api.urls),
    path("webhooks/grafana", grafana_webhook, name="grafana-webhook"),
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
]
