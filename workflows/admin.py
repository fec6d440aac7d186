"""The operator console for workflows and runs.

- Run history: a changelist that costs the same handful of queries whatever the page shows (step progress is
  two correlated subqueries, not a query per row) and that the indexes on WorkflowRun serve.
- Run page: a read-only page with the summary, a timeline of attempts and approval waits, attempts with
  their input and output, approvals, transitions and links into Grafana (``observability.links``).
- Actions (cancel, retry failed steps, re-run): POST + CSRF, through the same ``runner``/``services``
  functions as the API, for users with ``workflows.change_workflowrun`` (the "operate runs" permission);
  domain errors become admin messages.
- Workflows: nodes edited inline with the DAG validated on save; "Trigger now" with a context JSON.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import (
    CharField,
    Count,
    ForeignKey,
    IntegerField,
    ManyToManyField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextField,
    Value,
)
from django.db.models.functions import Cast, Coalesce
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts import permissions
from agents.models import Agent, AgentRun
from approvals.models import ApprovalRequest
from config.jsonsafe import unstorable
from observability import links
from workflows import runner, services
from workflows.loader import DefinitionError, validate_graph
from workflows.models import (
    TERMINAL_RUN_STATUSES,
    InvalidTransition,
    RunStatus,
    RunStep,
    StepStatus,
    TriggerSource,
    Workflow,
    WorkflowNode,
    WorkflowRun,
)

JSON_PREVIEW_CHARS = 20_000


def may_operate(request: HttpRequest) -> bool:
    """Cancel, retry, re-run and trigger: the same permission the API checks (accounts.permissions)."""
    return permissions.allows(request.user, permissions.OPERATE)


def status_badge(status: str) -> str:
    return format_html('<span class="run-status run-status-{}">{}</span>', status.lower(), status.replace("_", " "))


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"


def pretty_json(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    if len(text) > JSON_PREVIEW_CHARS:
        return text[:JSON_PREVIEW_CHARS] + f"\n… ({len(text) - JSON_PREVIEW_CHARS} more characters)"
    return text


def _admin_url(name: str, *args: Any) -> str | None:
    try:
        return reverse(f"admin:{name}", args=args)
    except NoReverseMatch:
        return None


# --- Workflows ------------------------------------------------------------------------------------------


class NodeFormSet(BaseInlineFormSet):
    """Validates the nodes as a graph (keys, agents, dependencies, cycles, step references) before saving."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        nodes = []
        for form in self.forms:
            data = form.cleaned_data
            if not data or data.get("DELETE"):
                continue
            agent = data.get("agent")
            nodes.append(
                {
                    "key": data.get("key"),
                    "agent": agent.slug if agent else None,
                    "depends_on": data.get("depends_on") or [],
                    "inputs": data.get("inputs") or {},
                }
            )
        known = set(Agent.objects.values_list("slug", flat=True))
        try:
            validate_graph(f"workflow {self.instance.slug or '(new)'}", nodes, known)
        except DefinitionError as exc:
            raise ValidationError(str(exc)) from exc


class WorkflowNodeInline(admin.StackedInline):
    model = WorkflowNode
    formset = NodeFormSet
    extra = 0
    autocomplete_fields = ["agent"]
    fieldsets = [
        (None, {"fields": [("key", "name", "position"), ("agent", "action"), "depends_on", "inputs"]}),
        (
            "Retries and timeout",
            {
                "classes": ["collapse"],
                "fields": [
                    ("max_attempts", "timeout_seconds"),
                    ("backoff_seconds", "backoff_max_seconds", "backoff_jitter"),
                ],
            },
        ),
        (
            "Approval gate",
            {
                "classes": ["collapse"],
                "fields": [
                    ("requires_approval", "required_approvals", "allow_self_approval"),
                    ("approver_groups", "approver_users"),
                    ("approval_timeout_seconds", "approval_timeout_action"),
                ],
            },
        ),
    ]


class TriggerForm(forms.Form):
    context = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80, "class": "vLargeTextField json-input"}),
        initial="{}",
        help_text='The run\'s context, a JSON object, e.g. {"target": "web-3"}.',
    )

    def clean_context(self) -> dict[str, Any]:
        try:
            value = json.loads(self.cleaned_data["context"])
        except json.JSONDecodeError as exc:
            raise ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from exc
        if not isinstance(value, dict):
            raise ValidationError(f"The context must be a JSON object, not {type(value).__name__}.")
        # NaN, Infinity and NUL parse as JSON but PostgreSQL refuses them; say so here rather than fail on save.
        problem = unstorable(value, "context")
        if problem:
            raise ValidationError(f"The context cannot be stored: {problem}.")
        return value


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "enabled", "version", "node_count", "updated_at", "trigger_link"]
    list_filter = ["enabled"]
    search_fields = ["slug", "name"]
    readonly_fields = ["version", "source_file", "created_at", "updated_at"]
    inlines = [WorkflowNodeInline]
    change_form_template = "admin/workflows/workflow/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Workflow]:
        return super().get_queryset(request).annotate(node_total=Count("nodes"))

    @admin.display(description="Steps", ordering="node_total")
    def node_count(self, obj: Workflow) -> int:
        return int(getattr(obj, "node_total", 0))

    @admin.display(description="")
    def trigger_link(self, obj: Workflow) -> str:
        if not obj.enabled:
            return ""
        url = reverse("admin:workflows_workflow_trigger", args=[obj.pk])
        return format_html('<a class="button" href="{}">Trigger now</a>', url)

    def get_list_display(self, request: HttpRequest) -> list[str | Callable[[Workflow], str | bool]]:
        shown = list(super().get_list_display(request))
        return shown if may_operate(request) else [c for c in shown if c != "trigger_link"]

    def get_urls(self) -> list[URLPattern]:
        trigger = path(
            "<int:workflow_id>/trigger/",
            self.admin_site.admin_view(self.trigger_view),
            name="workflows_workflow_trigger",
        )
        return [trigger, *super().get_urls()]

    def save_model(self, request: HttpRequest, obj: Workflow, form: Any, change: bool) -> None:
        # The definition before the edit, to bump the version only when the definition really changed.
        obj._definition_before = Workflow.objects.get(pk=obj.pk).snapshot() if change else None  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        workflow: Workflow = form.instance
        before = getattr(workflow, "_definition_before", None)
        if before is not None:
            after = workflow.snapshot()
            after["version"] = before["version"]
            if after != before:
                workflow.version += 1
                workflow.save(update_fields=["version", "updated_at"])
                messages.info(request, f"The definition changed: {workflow.slug} is now version {workflow.version}.")

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        obj = kwargs.get("obj")
        if obj is not None and obj.enabled and may_operate(request):
            context["trigger_url"] = reverse("admin:workflows_workflow_trigger", args=[obj.pk])
        return super().render_change_form(request, context, *args, **kwargs)

    def trigger_view(self, request: HttpRequest, workflow_id: int) -> HttpResponse:
        """A form taking a context JSON; starts a run with trigger "admin" and opens its page."""
        if not may_operate(request):
            raise PermissionDenied
        workflow = get_object_or_404(Workflow, pk=workflow_id)
        form = TriggerForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                run, _ = services.trigger_workflow(
                    workflow,
                    context=form.cleaned_data["context"],
                    trigger=TriggerSource.ADMIN,
                    trigger_detail=f"admin: {request.user.get_username()}",
                    user=request.user,
                )
            except services.WorkflowDisabled as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Started run {run.pk} of {workflow.slug}.")
                return HttpResponseRedirect(reverse("admin:workflows_workflowrun_change", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Trigger {workflow.name or workflow.slug}",
            "opts": self.opts,
            "workflow": workflow,
            "form": form,
            "nodes": workflow.nodes.select_related("agent").order_by("position", "key"),
            "change_url": reverse("admin:workflows_workflow_change", args=[workflow.pk]),
        }
        return TemplateResponse(request, "admin/workflows/workflow/trigger.html", context)


# --- Runs -----------------------------------------------------------------------------------------------


def _step_count(**filters: Any) -> Coalesce:
    counted = (
        RunStep.objects.filter(run=OuterRef("pk"), **filters)
        .order_by()
        .values("run")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


class RunSearchMixin:
    """Search by run id (full, or its first 8+ hex digits), trace id, or any text in the context."""

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WorkflowRun], search_term: str
    ) -> tuple[QuerySet[WorkflowRun], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q(trace_id=term.lower())
        with contextlib.suppress(ValueError):
            condition |= Q(id=uuid.UUID(term))
            # A whole run or trace id: both lookups use an index; the context scan is not needed.
            return queryset.filter(condition), False
        compact = term.lower().replace("-", "")
        if 8 <= len(compact) < 32 and all(c in "0123456789abcdef" for c in compact):
            condition |= Q(id_text__startswith=term.lower())
        condition |= Q(context_text__icontains=term)
        queryset = queryset.alias(id_text=Cast("id", CharField()), context_text=Cast("context", TextField())).filter(
            condition
        )
        return queryset, False


@admin.register(WorkflowRun)
class WorkflowRunAdmin(RunSearchMixin, admin.ModelAdmin):
    list_display = [
        "short_id",
        "status_display",
        "workflow",
        "trigger_display",
        "started",
        "duration",
        "progress",
        "trace_link",
    ]
    list_display_links = ["short_id"]
    list_filter = ["status", "workflow", "trigger", "created_at"]
    search_fields = ["trace_id"]  # shows the search box; RunSearchMixin does the searching
    search_help_text = "Run id (or its first 8 characters), trace id, or text in the context."
    ordering = ["-created_at"]
    list_per_page = 50
    show_full_result_count = False
    actions = ["cancel_runs", "retry_runs", "rerun_runs"]
    change_list_template = "admin/workflows/workflowrun/change_list.html"

    # -- permissions: runs are records; they change only through the actions.

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return may_operate(request)

    # -- the list

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {"title": "Run history", **(extra_context or {})})

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowRun]:
        return (
            super()
            .get_queryset(request)
            .select_related("workflow", "triggered_by")
            .defer("definition", "context", "trace_context", "request_fingerprint", "error")
            .annotate(steps_total=_step_count(), steps_done=_step_count(status=StepStatus.SUCCESS))
        )

    @admin.display(description="Run", ordering="id")
    def short_id(self, run: WorkflowRun) -> str:
        return format_html('<code title="{}">{}</code>', run.pk, str(run.pk)[:8])

    @admin.display(description="Status", ordering="status")
    def status_display(self, run: WorkflowRun) -> str:
        return status_badge(run.status)

    @admin.display(description="Trigger", ordering="trigger")
    def trigger_display(self, run: WorkflowRun) -> str:
        who = run.triggered_by.get_username() if run.triggered_by else ""
        return format_html('{}<span class="run-muted">{}</span>', run.trigger, f" · {who}" if who else "")

    @admin.display(description="Started", ordering="created_at")
    def started(self, run: WorkflowRun) -> str:
        moment = run.started_at or run.created_at
        local = timezone.localtime(moment)
        return format_html(
            '<time datetime="{}" title="{}">{}</time>',
            moment.isoformat(),
            local.strftime("%Y-%m-%d %H:%M:%S %Z"),
            local.strftime("%b %d, %H:%M:%S"),
        )

    @admin.display(description="Duration")
    def duration(self, run: WorkflowRun) -> str:
        return format_duration(run.duration_seconds)

    @admin.display(description="Steps")
    def progress(self, run: WorkflowRun) -> str:
        done, total = int(getattr(run, "steps_done", 0)), int(getattr(run, "steps_total", 0))
        percent = round(100 * done / total) if total else 0
        return format_html(
            '<span class="run-progress" title="{} of {} steps succeeded">'
            '<span class="run-progress-bar"><span style="width:{}%"></span></span>{}/{}</span>',
            done,
            total,
            percent,
            done,
            total,
        )

    @admin.display(description="Trace")
    def trace_link(self, run: WorkflowRun) -> str:
        if not run.trace_id:
            return "—"
        url = links.run_trace_url(run)
        if url is None:
            return format_html('<code class="run-muted" title="{}">{}…</code>', run.trace_id, run.trace_id[:8])
        return format_html(
            '<a class="trace-link" href="{}" target="_blank" rel="noopener" title="Open trace {} in Grafana">{}…</a>',
            url,
            run.trace_id,
            run.trace_id[:8],
        )

    # -- actions on selected runs (the list) and on one run (the run page)

    def _act(self, request: HttpRequest, runs: Any, action: str) -> WorkflowRun | None:
        """Runs ``action`` on each run through the runner/services; reports each outcome; returns a new run."""
        actor = request.user.get_username()
        done: list[str] = []
        created: WorkflowRun | None = None
        for run in runs:
            try:
                if action == "cancel":
                    runner.cancel_run(run, reason=f"cancelled in the admin by {actor}", actor=actor)
                    done.append(f"Cancelled run {run.pk}.")
                elif action == "retry":
                    runner.retry_run(run, actor=actor)
                    done.append(f"Retrying the failed steps of run {run.pk}.")
                elif action == "rerun":
                    created = services.rerun(run, user=request.user)
                    done.append(f"Started run {created.pk}, a re-run of {run.pk}.")
                else:
                    raise Http404(f"unknown action {action!r}")
            except InvalidTransition as exc:
                verb = {"cancel": "cancel", "retry": "retry", "rerun": "re-run"}[action]
                messages.error(request, f"Could not {verb} run {run.pk}: {exc}.")
            except services.WorkflowDisabled as exc:
                messages.error(request, f"Could not re-run run {run.pk}: {exc}.")
        for line in done:
            messages.success(request, line)
        return created

    @admin.action(description="Cancel selected runs", permissions=["operate"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> None:
        self._act(request, queryset, "cancel")

    @admin.action(description="Retry the failed steps of selected runs", permissions=["operate"])
    def retry_runs(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> None:
        self._act(request, queryset, "retry")

    @admin.action(description="Re-run selected runs with the same context", permissions=["operate"])
    def rerun_runs(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> None:
        self._act(request, queryset.select_related("workflow").defer(None), "rerun")

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<uuid:run_id>/change/",
                self.admin_site.admin_view(self.run_view),
                name="workflows_workflowrun_change",
            ),
            path(
                "<uuid:run_id>/act/<slug:action>/",
                self.admin_site.admin_view(self.act_view),
                name="workflows_workflowrun_act",
            ),
        ]
        return [*own, *super().get_urls()]

    def act_view(self, request: HttpRequest, run_id: uuid.UUID, action: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not may_operate(request):
            raise PermissionDenied
        if action not in ("cancel", "retry", "rerun"):
            raise Http404(f"unknown action {action!r}")
        run = get_object_or_404(WorkflowRun.objects.select_related("workflow"), pk=run_id)
        created = self._act(request, [run], action)
        target = created or run
        return HttpResponseRedirect(reverse("admin:workflows_workflowrun_change", args=[target.pk]))

    # -- the run page

    def run_view(self, request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
        run = get_object_or_404(WorkflowRun.objects.select_related("workflow", "triggered_by", "rerun_of"), pk=run_id)
        if not self.has_view_or_change_permission(request, run):
            raise PermissionDenied
        steps = list(run.steps.all())
        attempts = list(AgentRun.objects.filter(run=run).order_by("started_at", "id"))
        approvals = list(
            ApprovalRequest.objects.filter(run=run)
            .select_related("decided_by")
            .prefetch_related("decisions__user")
            .order_by("requested_at")
        )
        now = timezone.now()
        names = {node["key"]: node.get("name") or node["key"] for node in run.definition.get("nodes", [])}
        keys = {step.pk: step.key for step in steps}
        operate = may_operate(request)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Run {str(run.pk)[:8]} of {run.workflow.name or run.workflow.slug}",
            "subtitle": None,
            "opts": self.opts,
            "run": run,
            "status_badge": status_badge(run.status),
            "duration": format_duration(run.duration_seconds),
            "context_json": pretty_json(run.context),
            "steps": [
                {
                    "step": step,
                    "name": names.get(step.key, step.key),
                    "badge": status_badge(step.status),
                    "duration": format_duration(_seconds(step.started_at, step.finished_at, now)),
                }
                for step in steps
            ],
            "attempts": [
                {
                    "attempt": attempt,
                    "key": keys.get(attempt.step_id, "?"),
                    "badge": status_badge(attempt.status),
                    "duration": format_duration(
                        attempt.duration_seconds
                        if attempt.duration_seconds is not None
                        else _seconds(attempt.started_at, attempt.finished_at, now)
                    ),
                    "input": pretty_json(attempt.input),
                    "output": pretty_json(attempt.output) if attempt.output is not None else "",
                    "span_url": links.attempt_span_url(run, attempt),
                }
                for attempt in attempts
            ],
            "approvals": [
                {
                    "req": req,
                    "badge": status_badge(req.status),
                    "wait": format_duration(req.waited(now)),
                    "decisions": list(req.decisions.all()),
                    "url": _admin_url("approvals_approvalrequest_change", req.pk),
                }
                for req in approvals
            ],
            "transitions": list(run.transitions.all()),
            "reruns": list(run.reruns.only("id", "status", "created_at").order_by("created_at")),
            "timeline": build_timeline(run, steps, attempts, approvals, names, now),
            "grafana": links.run_links(run),
            "alerts": alerts_for(run),
            "workflow_url": _admin_url("workflows_workflow_change", run.workflow_id),
            "operate": operate,
            "can_cancel": operate and run.status not in TERMINAL_RUN_STATUSES,
            "can_retry": operate and run.status == RunStatus.FAILED,
            "can_rerun": operate and run.workflow.enabled,
            **{
                f"{action}_url": reverse("admin:workflows_workflowrun_act", args=[run.pk, action])
                for action in ("cancel", "retry", "rerun")
            },
        }
        return TemplateResponse(request, "admin/workflows/workflowrun/run.html", context)


def _percent(moment: datetime, origin: datetime, total: float) -> float:
    return round(100 * max(0.0, (moment - origin).total_seconds()) / total, 3)


def build_timeline(
    run: WorkflowRun,
    steps: list[RunStep],
    attempts: list[AgentRun],
    approvals: list[ApprovalRequest],
    names: dict[str, str],
    now: datetime,
) -> dict[str, Any]:
    """Rows of bars (one row per step) placed in percent of the run's life, for the page to draw.

    Bars: the wait in the queue before the first attempt, each attempt (coloured by its status) and each
    approval wait; gaps between attempts are retry backoff.
    """
    origin = run.created_at
    end = max(
        [run.finished_at or now] + [a.finished_at or now for a in attempts] + [r.decided_at or now for r in approvals]
    )
    total = max((end - origin).total_seconds(), 0.001)

    def bar(kind: str, css: str, start: datetime, finish: datetime | None, label: str) -> dict[str, Any]:
        left = _percent(start, origin, total)
        right = _percent(finish or now, origin, total)
        seconds = ((finish or now) - start).total_seconds()
        return {
            "kind": kind,
            "css": css,
            "left": left,
            "width": max(round(right - left, 3), 0.6),
            "label": label,
            "title": f"{label} — {format_duration(seconds)}, at +{format_duration((start - origin).total_seconds())}",
            "open": finish is None,
            "wide": right - left >= 9 and kind in ("attempt", "approval"),
        }

    rows = []
    for step in steps:
        own = [a for a in attempts if a.step_id == step.pk]
        bars = []
        if step.ready_at and own and own[0].started_at > step.ready_at:
            bars.append(bar("queue", "queue", step.ready_at, own[0].started_at, "queued"))
        for req in approvals:
            if req.step_id == step.pk:
                bars.append(
                    bar("approval", req.status.lower(), req.requested_at, req.decided_at, f"approval {req.status}")
                )
        for previous, attempt in zip([None, *own], own, strict=False):
            if previous is not None and previous.finished_at and attempt.started_at > previous.finished_at:
                bars.append(bar("backoff", "backoff", previous.finished_at, attempt.started_at, "retry backoff"))
            bars.append(
                bar(
                    "attempt",
                    attempt.status.lower(),
                    attempt.started_at,
                    attempt.finished_at,
                    f"attempt {attempt.attempt} {attempt.status}",
                )
            )
        rows.append({"key": step.key, "name": names.get(step.key, step.key), "status": step.status, "bars": bars})
    ticks = [
        {"left": p, "label": "0" if p == 0 else "+" + format_duration(total * p / 100)} for p in (0, 25, 50, 75, 100)
    ]
    return {"rows": rows, "ticks": ticks, "total": format_duration(total), "origin": origin, "end": end}


def _seconds(start: datetime | None, end: datetime | None, now: datetime) -> float | None:
    if start is None:
        return None
    return max(0.0, ((end or now) - start).total_seconds())


def alerts_for(run: WorkflowRun) -> list[dict[str, str]]:
    """The alert records that started the run: the alert itself and the webhook delivery that carried it.

    They live in the observability app; every model there with a relation to WorkflowRun (foreign key or
    many-to-many) is asked, so the page follows the webhook's models without naming them.
    """
    if run.trigger != TriggerSource.ALERT:
        return []
    from django.apps import apps

    try:
        config = apps.get_app_config("observability")
    except LookupError:
        return []
    found = []
    for model in config.get_models():
        for field in model._meta.get_fields():
            if not isinstance(field, ForeignKey | ManyToManyField) or field.related_model is not WorkflowRun:
                continue
            for record in model._default_manager.filter(**{field.name: run}).order_by("-pk")[:5]:
                url = _admin_url(f"{model._meta.app_label}_{model._meta.model_name}_change", record.pk)
                found.append({"label": str(record), "url": url or "", "kind": str(model._meta.verbose_name)})
    # The alert itself before the delivery that carried it.
    return sorted(found, key=lambda a: "event" not in a["kind"])
