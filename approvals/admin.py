"""The operators' console for approval gates: a Pending approvals queue, a detail page, bulk approve.

Nothing here changes a request directly: every approve or reject goes through ``services.decide`` with
channel "admin", which checks the permission, the approver list and self-approval again, so a button
that is not shown cannot be replaced by a forged POST. Requests are read-only in the admin.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.timesince import timesince

from approvals import services
from approvals.models import ApprovalDecision, ApprovalRequest, PendingApproval
from config.admin import ReadOnlyModelAdmin
from config.jsonsafe import unstorable

VIEW_PERMISSION = "approvals.view_approvalrequest"
QUEUE_LIMIT = 200
SUMMARY_CHARS = 2000


def _json(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS] + "\n…"


def _may_see(request: HttpRequest) -> bool:
    return request.user.has_perm(VIEW_PERMISSION) or request.user.has_perm(services.DECIDE_PERMISSION)


def describe(req: ApprovalRequest, user: Any) -> dict[str, Any]:
    """Everything an operator needs to decide one request, for the queue and the detail page."""
    run = req.run
    node = run.node(req.node_key)
    inputs, inputs_error = services.preview_inputs(req) if req.is_open else (None, "")
    refusal = services.decide_refusal(user, req)
    own_run = run.triggered_by_id is not None and run.triggered_by_id == user.pk
    decisions = list(req.decisions.select_related("user"))
    return {
        "req": req,
        "run": run,
        "workflow": run.definition.get("name") or run.workflow_slug,
        "step_name": node.get("name") or req.node_key,
        "run_url": reverse("admin:workflows_workflowrun_change", args=[run.pk]),
        "detail_url": reverse("admin:approvals_approvalrequest_change", args=[req.pk]),
        "decide_url": reverse("admin:approvals_approvalrequest_decide", args=[req.pk]),
        "waiting": timesince(req.requested_at, timezone.now()),
        "waited_seconds": round(req.waited(), 1),
        "context": _json(run.context),
        "inputs": _json(inputs) if inputs is not None else "",
        "inputs_error": inputs_error,
        "upstream": _json(services.upstream_outputs(run)),
        "approvals": sum(1 for d in decisions if d.decision == ApprovalDecision.Decision.APPROVE),
        "decisions": decisions,
        "triggered_by": run.triggered_by.username if run.triggered_by else run.trigger_detail or run.trigger,
        "may_decide": req.is_open and refusal is None,
        "refusal": refusal,
        "may_approve": not (own_run and not req.allow_self_approval),
        "already_voted": any(d.user_id == user.pk for d in decisions),
        "closed_message": "" if req.is_open else services.closed_message(req),
    }


def approve_many(request: HttpRequest, ids: Iterable[int], comment: str) -> None:
    """Approves each request through ``decide``; reports what happened to each as admin messages."""
    approved, errors = 0, []
    for request_id in ids:
        try:
            services.decide(
                request_id,
                acting_user=request.user,
                decision=ApprovalDecision.Decision.APPROVE,
                comment=comment,
                channel=ApprovalDecision.Channel.ADMIN,
            )
            approved += 1
        except ApprovalRequest.DoesNotExist:
            errors.append(f"approval request {request_id} does not exist")
        except services.ApprovalError as exc:
            errors.append(str(exc))
    if approved:
        messages.success(request, f"Recorded {approved} approval{'s' if approved != 1 else ''}.")
    for error in errors:
        messages.error(request, error)


class ApprovalDecisionInline(admin.TabularInline):
    model = ApprovalDecision
    extra = 0
    can_delete = False
    fields = ("decided_at", "user", "decision", "comment", "channel", "wait_seconds")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _may_see(request)


class ReadOnlyApprovalAdmin(ReadOnlyModelAdmin):
    """Requests change only through ``decide``; operators with the decide permission may see them."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _may_see(request)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _may_see(request)

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(services.DECIDE_PERMISSION)


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyApprovalAdmin):
    list_display = [
        "id",
        "workflow",
        "run_link",
        "node_key",
        "status",
        "requested_at",
        "waiting",
        "decided_by",
        "decided_at",
        "channel",
    ]
    list_filter = ["status", "channel"]
    search_fields = ["=run__id", "node_key", "decided_by__username"]
    list_select_related = ["run", "decided_by"]
    date_hierarchy = "requested_at"
    inlines = [ApprovalDecisionInline]
    actions = ["approve_selected"]
    fields = [
        "run",
        "node_key",
        "status",
        "requested_at",
        "expires_at",
        "timeout_action",
        "required_approvals",
        "approver_groups",
        "approver_users",
        "allow_self_approval",
        "decided_at",
        "decided_by",
        "decision_comment",
        "channel",
        "wait_seconds",
    ]

    @admin.display(description="workflow")
    def workflow(self, obj: ApprovalRequest) -> str:
        return obj.run.workflow_slug

    @admin.display(description="run")
    def run_link(self, obj: ApprovalRequest) -> str:
        url = reverse("admin:workflows_workflowrun_change", args=[obj.run_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.run_id)[:8])

    @admin.display(description="waited")
    def waiting(self, obj: ApprovalRequest) -> str:
        end = obj.decided_at or timezone.now()
        return timesince(obj.requested_at, end)

    @admin.action(description="Approve selected requests", permissions=["decide"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> None:
        approve_many(request, list(queryset.values_list("id", flat=True)), "approved in bulk in the admin")

    def get_urls(self) -> list[URLPattern]:
        decide = path(
            "<int:object_id>/decide/",
            self.admin_site.admin_view(self.decide_view),
            name="approvals_approvalrequest_decide",
        )
        return [decide, *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        obj = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if obj is not None and self.has_view_permission(request, obj):
            extra["approval"] = describe(obj, request.user)
            extra["queue_url"] = reverse("admin:approvals_pendingapproval_changelist")
        return super().change_view(request, object_id, form_url, extra)

    def decide_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The approve/reject buttons post here (CSRF-checked by admin_view); the answer is a message."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        decision = request.POST.get("decision", "")
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
            back = reverse("admin:approvals_pendingapproval_changelist")
        if decision not in ApprovalDecision.Decision.values:
            messages.error(request, "Choose approve or reject.")
            return HttpResponseRedirect(back)
        try:
            row = services.decide(
                object_id,
                acting_user=request.user,
                decision=decision,
                comment=request.POST.get("comment", ""),
                channel=ApprovalDecision.Channel.ADMIN,
            )
        except ApprovalRequest.DoesNotExist:
            messages.error(request, f"Approval request {object_id} does not exist.")
        except services.ApprovalError as exc:
            messages.error(request, str(exc))
        else:
            req = row.request
            if req.status == ApprovalRequest.Status.APPROVED:
                messages.success(request, f"Approved step '{req.node_key}' of run {req.run_id}; the run resumes.")
            elif req.status == ApprovalRequest.Status.REJECTED:
                messages.success(request, f"Rejected step '{req.node_key}' of run {req.run_id}; the run is rejected.")
            else:
                done = req.decisions.filter(decision=ApprovalDecision.Decision.APPROVE).count()
                messages.info(
                    request,
                    f"Your approval of step '{req.node_key}' was recorded: {done} of {req.required_approvals} "
                    "approvals so far.",
                )
        return HttpResponseRedirect(back)


@admin.register(PendingApproval)
class PendingApprovalAdmin(ReadOnlyApprovalAdmin):
    """The queue: every open request, oldest first, with what the step will do and decision buttons."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApprovalRequest]:
        return (
            ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING)
            .select_related("run", "run__triggered_by")
            .order_by("requested_at", "id")
        )

    def get_urls(self) -> list[URLPattern]:
        return [
            path("", self.admin_site.admin_view(self.changelist_view), name="approvals_pendingapproval_changelist"),
            path(
                "approve/",
                self.admin_site.admin_view(self.bulk_approve_view),
                name="approvals_pendingapproval_bulk_approve",
            ),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        pending = list(self.get_queryset(request)[:QUEUE_LIMIT])
        cards = [describe(req, request.user) for req in pending]
        context = {
            **self.admin_site.each_context(request),
            "title": "Pending approvals",
            "opts": self.opts,
            "cards": cards,
            "total": self.get_queryset(request).count(),
            "limit": QUEUE_LIMIT,
            "can_decide": self.has_decide_permission(request),
            "bulk_url": reverse("admin:approvals_pendingapproval_bulk_approve"),
            "all_url": reverse("admin:approvals_approvalrequest_changelist"),
            "here": request.get_full_path(),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/approvals/pendingapproval/queue.html", context)

    def bulk_approve_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        ids = [int(i) for i in request.POST.getlist("ids") if i.isdecimal()]  # not isdigit(): int("²") fails
        comment = request.POST.get("comment", "").strip()
        # decide() refuses such a comment too; checked here as well so the refusal is said once, not per request.
        problem = unstorable(comment, "comment")
        if not ids:
            messages.warning(request, "Select the requests to approve first.")
        elif problem:
            messages.error(request, f"Nothing was approved: {problem}.")
        else:
            approve_many(request, ids, comment or "approved in bulk in the admin")
        return HttpResponseRedirect(reverse("admin:approvals_pendingapproval_changelist"))
