"""The operator console's admin site: the home page shows what needs attention right now.

``ConsoleAdminConfig`` replaces ``django.contrib.admin`` in INSTALLED_APPS so that ``admin.site`` (and every
``@admin.register``) is a ``ConsoleAdminSite``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.db.models import Count
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

RECENT = timedelta(hours=24)


class ConsoleAdminConfig(AdminConfig):
    default_site = "config.admin.ConsoleAdminSite"

    def ready(self) -> None:
        super().ready()
        from config import checks  # noqa: F401 - registers the deploy checks


def pending_approvals_url() -> str:
    """The Pending approvals queue, or the request list filtered to PENDING where the queue is not installed."""
    try:
        return reverse("admin:approvals_pendingapproval_changelist")
    except NoReverseMatch:
        return reverse("admin:approvals_approvalrequest_changelist") + "?status__exact=PENDING"


def runs_by_status(since: timedelta = RECENT) -> list[dict[str, Any]]:
    """Runs created in the window, per status in the state machine's order (zero counts included)."""
    from workflows.display import status_label
    from workflows.models import RunStatus, WorkflowRun

    now = timezone.now()
    counts = dict(
        WorkflowRun.objects.filter(created_at__gte=now - since)
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("status", "n")
    )
    changelist = reverse("admin:workflows_workflowrun_changelist")
    # The changelist's date filter takes the same window, so a click shows exactly the counted runs.
    since_at = (now - since).isoformat(timespec="seconds")
    return [
        {
            "status": status.value,
            "label": status_label(status.value),
            "count": counts.get(status.value, 0),
            "url": changelist + "?" + urlencode({"status__exact": status.value, "created_at__gte": since_at}),
        }
        for status in RunStatus
    ]


class ConsoleAdminSite(admin.AdminSite):
    site_header = "CommandCenter"
    site_title = "CommandCenter"
    index_title = "Operator console"
    index_template = "admin/console_index.html"
    # The console is the site: there is no other page for a "View site" link to open.
    site_url = None

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        from approvals.models import ApprovalRequest
        from observability import links

        user = request.user
        context: dict[str, Any] = {"grafana_dashboards": links.dashboards()}
        if user.has_perm("workflows.view_workflowrun") or user.has_perm("workflows.change_workflowrun"):
            statuses = runs_by_status()
            context["run_statuses"] = statuses
            context["runs_total"] = sum(s["count"] for s in statuses)
        if user.has_perm("approvals.view_approvalrequest") or user.has_perm("approvals.decide_approval"):
            context["pending_approvals"] = ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).count()
            context["pending_approvals_url"] = pending_approvals_url()
        return super().index(request, {**context, **(extra_context or {})})
