"""The operators' console for approval gates: a Pending approvals queue, a detail page, bulk approve.

Nothing here changes a request directly: every approve or reject goes through ``services.decide`` with
channel "admin", which checks the permission, the approver list and self-approval again, so a button
that is not shown cannot be replaced by a forged POST. Requests are read-only in the admin.

The queue refreshes itself (``workflows/static/workflows/console.js``): a request with the ``X-Console-Live``
header gets the cards alone, read with the same fixed number of queries whatever the queue holds (eight, from one
card to a full queue of 200; tests/approvals/test_queue_queries.py). Bulk
approval, from the queue or the request list, first shows what it will do to which runs.

Over 400 lines because the queue page, its live refresh, the bulk confirmation and the request admin share the
card-building queries; splitting them would split the one place that keeps the query count fixed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Prefetch, QuerySet, Window
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from approvals import services
from approvals.models import ApprovalDecision, ApprovalRequest, PendingApproval
from config.adminkit import ReadOnlyModelAdmin
from config.jsonsafe import unstorable
from workflows.admin import is_live, labelled_choices
from workflows.display import format_wait, status_badge, status_label
from workflows.models import RunStep, StepStatus

VIEW_PERMISSION = "approvals.view_approvalrequest"
QUEUE_LIMIT = 200
SUMMARY_CHARS = 2000
BULK_COMMENT = "approved in bulk in the admin"


def _json(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS] + "\n…"


def _may_see(request: HttpRequest) -> bool:
    return request.user.has_perm(VIEW_PERMISSION) or request.user.has_perm(services.DECIDE_PERMISSION)


def describe(
    req: ApprovalRequest, user: Any, *, upstream: dict[str, Any] | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Everything an operator needs to decide one request, for the queue and the detail page.

    ``upstream`` (the run's step outputs by key, from ``upstream_by_run``) saves a query per card in the queue;
    the request's decisions should be prefetched there for the same reason.
    """
    run = req.run
    now = now or timezone.now()
    node = run.node(req.node_key)
    if upstream is None:
        upstream = services.upstream_outputs(run)
    inputs, inputs_error = services.preview_inputs(req, upstream) if req.is_open else (None, "")
    refusal = services.decide_refusal(user, req)
    own_run = run.triggered_by_id is not None and run.triggered_by_id == user.pk
    decisions = list(req.decisions.all())
    workflow = run.definition.get("name") or run.workflow_slug
    step_name = node.get("name") or req.node_key
    return {
        "req": req,
        "run": run,
        "workflow": workflow,
        "step_name": step_name,
        # What the buttons' accessible names say: which request they decide.
        "subject": f"step '{step_name}' of run {str(run.pk)[:8]} ({workflow})",
        "status_badge": status_badge(req.status),
        "run_badge": status_badge(run.status),
        "run_url": reverse("admin:workflows_workflowrun_change", args=[run.pk]),
        "detail_url": reverse("admin:approvals_approvalrequest_change", args=[req.pk]),
        "decide_url": reverse("admin:approvals_approvalrequest_decide", args=[req.pk]),
        "waiting": format_wait(req.waited(now)),
        "context": _json(run.context),
        "inputs": _json(inputs) if inputs is not None else "",
        "inputs_error": inputs_error,
        "upstream": _json(upstream),
        "approvals": sum(1 for d in decisions if d.decision == ApprovalDecision.Decision.APPROVE),
        "decisions": decisions,
        "triggered_by": run.triggered_by.username if run.triggered_by else run.trigger_detail or run.trigger,
        "may_decide": req.is_open and refusal is None,
        "refusal": refusal,
        "may_approve": not (own_run and not req.allow_self_approval),
        "already_voted": any(d.user_id == user.pk for d in decisions),
        "closed_message": "" if req.is_open else services.closed_message(req),
    }


def upstream_by_run(run_ids: Iterable[Any]) -> dict[Any, dict[str, Any]]:
    """The outputs of the finished steps of each run, by run id and step key, in one query."""
    found: dict[Any, dict[str, Any]] = {run_id: {} for run_id in run_ids}
    rows = RunStep.objects.filter(run_id__in=list(found), status=StepStatus.SUCCESS)
    for run_id, key, output in rows.values_list("run_id", "key", "output"):
        found[run_id][key] = output
    return found


def with_decisions(queryset: QuerySet[ApprovalRequest]) -> QuerySet[ApprovalRequest]:
    return queryset.prefetch_related(
        Prefetch("decisions", queryset=ApprovalDecision.objects.select_related("user").order_by("decided_at", "id"))
    )


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
        "status_display",
        "requested_at",
        "waiting",
        "decided_by",
        "decided_at",
        "channel",
    ]
    list_filter = [("status", labelled_choices(status_label)), "channel"]
    search_fields = ["=run__id", "node_key", "decided_by__username"]
    list_select_related = ["run", "decided_by"]
    date_hierarchy = "requested_at"
    inlines = [ApprovalDecisionInline]
    actions = ["approve_selected"]

    class Media:
        css = {"all": ["workflows/console.css"]}  # the status badges

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

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: ApprovalRequest) -> str:
        return status_badge(obj.status)

    @admin.display(description="waited")
    def waiting(self, obj: ApprovalRequest) -> str:
        return format_wait(obj.waited())

    @admin.action(description="Approve selected requests…", permissions=["decide"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> TemplateResponse | None:
        ids = list(queryset.values_list("id", flat=True))
        if request.POST.get("post") == "yes":
            approve_many(request, ids, request.POST.get("comment", "").strip() or BULK_COMMENT)
            return None
        return confirm_bulk_approve(
            request,
            self.admin_site,
            ids,
            comment="",
            action_url=request.get_full_path(),
            back=request.get_full_path(),
            action="approve_selected",
        )

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
        """The queue; a live refresh (``X-Console-Live``) gets the summary and the cards alone."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        # How many wait in all comes with the cards (a window over the whole queue, computed before the limit),
        # so a full queue costs no extra count.
        waiting = self.get_queryset(request).annotate(waiting_total=Window(Count("id")))
        pending = list(with_decisions(waiting)[:QUEUE_LIMIT])
        total: int = pending[0].waiting_total if pending else 0  # type: ignore[attr-defined]
        upstream = upstream_by_run({req.run_id for req in pending})
        now = timezone.now()
        cards = [describe(req, request.user, upstream=upstream[req.run_id], now=now) for req in pending]
        context = {
            **self.admin_site.each_context(request),
            "title": "Pending approvals",
            "opts": self.opts,
            "cards": cards,
            "total": total,
            "limit": QUEUE_LIMIT,
            "can_decide": self.has_decide_permission(request),
            "bulk_url": reverse("admin:approvals_pendingapproval_bulk_approve"),
            "all_url": reverse("admin:approvals_approvalrequest_changelist"),
            "here": reverse("admin:approvals_pendingapproval_changelist"),
            **(extra_context or {}),
        }
        template = "queue_live.html" if is_live(request) else "queue.html"
        return TemplateResponse(request, f"admin/approvals/pendingapproval/{template}", context)

    def bulk_approve_view(self, request: HttpRequest) -> HttpResponse:
        """The queue's "Approve selected": first what it will do (confirm_bulk_approve), then, confirmed, does it."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        ids = [int(i) for i in request.POST.getlist("ids") if i.isdecimal()]  # not isdigit(): int("²") fails
        comment = request.POST.get("comment", "").strip()
        # decide() refuses such a comment too; checked here as well so the refusal is said once, not per request.
        problem = unstorable(comment, "comment")
        queue = reverse("admin:approvals_pendingapproval_changelist")
        if not ids:
            messages.warning(request, "Select the requests to approve first.")
        elif problem:
            messages.error(request, f"Nothing was approved: {problem}.")
        elif request.POST.get("confirm") != "yes":
            here = reverse("admin:approvals_pendingapproval_bulk_approve")
            return confirm_bulk_approve(request, self.admin_site, ids, comment=comment, action_url=here, back=queue)
        else:
            approve_many(request, ids, comment or BULK_COMMENT)
        return HttpResponseRedirect(queue)


def confirm_bulk_approve(
    request: HttpRequest,
    site: admin.AdminSite,
    ids: list[int],
    *,
    comment: str,
    action_url: str,
    back: str,
    action: str = "",
) -> TemplateResponse:
    """Which of the selected requests this user's approval decides, which it only counts toward a quorum, and
    which ``decide`` will refuse (with its reason), before anything is recorded."""
    requests = list(
        with_decisions(ApprovalRequest.objects.filter(id__in=ids).select_related("run", "run__triggered_by")).order_by(
            "requested_at", "id"
        )
    )
    user = request.user
    now = timezone.now()
    approving, skipped = [], []
    for req in requests:
        card = describe(req, user, upstream={}, now=now)
        reason = ""
        if not req.is_open:
            reason = card["closed_message"]
        elif card["refusal"]:
            reason = card["refusal"]
        elif not card["may_approve"]:
            reason = f"{user.get_username()} triggered this run and may not approve it"
        elif card["already_voted"]:
            reason = "you have already approved it"
        if reason:
            skipped.append({**card, "reason": reason})
            continue
        resumes = card["approvals"] + 1 >= req.required_approvals
        outcome = (
            "the step is released and the run resumes"
            if resumes
            else f"counts as approval {card['approvals'] + 1} of the {req.required_approvals} it needs"
        )
        approving.append({**card, "outcome": outcome, "resumes": resumes})
    count = len(approving)
    context = {
        **site.each_context(request),
        "title": f"Approve {count} request{pluralize(count)}?" if count else "Nothing to approve",
        "opts": PendingApproval._meta,
        "approving": approving,
        "skipped": skipped,
        "count": count,
        "resuming": sum(1 for a in approving if a["resumes"]),
        "counting": sum(1 for a in approving if not a["resumes"]),
        "comment": comment,
        "ids": [a["req"].pk for a in approving],
        "action_url": action_url,
        "action": action,
        "back": back,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/approvals/bulk_approve_confirmation.html", context)
