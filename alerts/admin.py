"""The alert webhook in the operator console: deliveries with their outcome, and replay of failed ones."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from alerts import actions
from alerts.models import AlertDelivery, AlertEvent
from workflows.models import WorkflowRun


def _run_links(runs: QuerySet) -> str:
    return (
        format_html_join(
            ", ",
            "<a href='{}'>{}</a>",
            ((reverse("admin:workflows_workflowrun_change", args=[run.pk]), str(run.pk)[:8]) for run in runs),
        )
        or "-"
    )


def origins_of(run: WorkflowRun) -> list[dict[str, str]]:
    """The run page's "started by" links for an alert-triggered run: the alerts that started it, then the
    deliveries that carried them (registered with workflows.runpage by AlertsConfig.ready())."""
    found = []
    for model, page in (
        (AlertEvent, "admin:alerts_alertevent_change"),
        (AlertDelivery, "admin:alerts_alertdelivery_change"),
    ):
        for record in model._default_manager.filter(runs=run).order_by("-pk")[:5]:
            found.append(
                {"label": str(record), "url": reverse(page, args=[record.pk]), "kind": str(model._meta.verbose_name)}
            )
    return found


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "received_at",
        "source",
        "status",
        "alert_count",
        "outcome",
        "http_status",
        "reason",
        "run_links",
    ]
    list_filter = ["outcome", "source", "status"]
    search_fields = ["group_key", "error"]
    date_hierarchy = "received_at"
    actions = ["replay"]
    fields = (
        "received_at",
        "source",
        "status",
        "group_key",
        "alert_count",
        "outcome",
        "http_status",
        "error",
        "run_links",
        "attempts",
        "processed_at",
        "content_type",
        "pretty_headers",
        "raw_size",
        "pretty_body",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlertDelivery]:
        return super().get_queryset(request).prefetch_related("runs")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="reason")
    def reason(self, obj: AlertDelivery) -> str:
        """Why a delivery was rejected or failed (the full text on hover and on its page)."""
        if not obj.error:
            return "-"
        return format_html("<span title='{}'>{}</span>", obj.error, Truncator(obj.error).chars(120))

    @admin.display(description="bytes received")
    def raw_size(self, obj: AlertDelivery) -> str:
        if obj.raw_body is None:
            return "-"
        encoding = obj.headers.get("Content-Encoding", "")
        return f"{len(obj.raw_body)}" + (f" (Content-Encoding: {encoding})" if encoding else "")

    @admin.display(description="runs")
    def run_links(self, obj: AlertDelivery) -> str:
        return _run_links(obj.runs.all())

    @admin.display(description="headers")
    def pretty_headers(self, obj: AlertDelivery) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.headers, indent=2, sort_keys=True))

    @admin.display(description="body")
    def pretty_body(self, obj: AlertDelivery) -> str:
        if not obj.body and obj.raw_body:
            return "(the bytes received could not be decoded: see the reason)"
        try:
            text = json.dumps(json.loads(obj.body), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):
            text = obj.body
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", text)

    @admin.action(description="Replay: process the stored body again", permissions=["change"])
    def replay(self, request: HttpRequest, queryset: QuerySet[AlertDelivery]) -> None:
        for delivery in queryset.order_by("received_at", "id"):
            try:
                result = actions.replay(delivery, acting_user=request.user)
            except PermissionDenied as refused:
                self.message_user(request, f"Delivery {delivery.pk}: {refused}", messages.ERROR)
                return
            runs = result.body.get("workflowRunIds")
            if result.status == 200:
                started = f"started run(s) {', '.join(runs)}" if runs else "no new alert (all deduplicated)"
                self.message_user(request, f"Delivery {delivery.pk}: {started}.", messages.SUCCESS)
            else:
                detail = result.body.get("detail", "")
                self.message_user(request, f"Delivery {delivery.pk}: {result.status} {detail}", messages.ERROR)


@admin.register(AlertEvent)
class AlertEventAdmin(admin.ModelAdmin):
    list_display = ["alertname", "status", "starts_at", "fingerprint", "notified_at", "duplicates", "last_seen_at"]
    list_filter = ["status"]
    search_fields = ["alertname", "fingerprint"]
    readonly_fields = [
        "fingerprint",
        "status",
        "starts_at",
        "alertname",
        "first_seen_at",
        "last_seen_at",
        "notified_at",
        "duplicates",
        "delivery",
        "firing_event",
        "run_links",
    ]
    exclude = ["runs"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="runs")
    def run_links(self, obj: AlertEvent) -> str:
        return _run_links(obj.runs.all())
