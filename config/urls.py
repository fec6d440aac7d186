from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from accounts.views import admin_login
from alerts.webhooks import grafana as grafana_webhook
from config.api import api
from config.health import healthz, readyz

urlpatterns = [
    # The service's only pages are the console's; the bare host name leads there.
    path("", RedirectView.as_view(pattern_name="admin:index"), name="root"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("api/", api.urls),
    path("webhooks/grafana", grafana_webhook, name="grafana-webhook"),
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
]

# No traceback or setting ever reaches a client; a database outage answers 503 (config/middleware.py).
handler500 = "config.middleware.server_error"
