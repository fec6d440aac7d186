"""The operator console for workflows and runs.

- Run history: a changelist that costs the same handful of queries whatever the page shows (the step counts of
  a page are one grouped query, not a query per row) and that the indexes on WorkflowRun serve.
- Run page: a read-only page with the summary, the DAG (``workflows.dag``), the timeline
  (``workflows.timeline``), attempts by retry round with their input and output, approvals, transitions and
  links into Grafana (the telemetry slot of ``workflows.events``).
- Live: the run page, the run list and the approvals queue poll themselves (``static/workflows/console.js``)
  while something they show is still open; a request with the ``X-Console-Live`` header gets only the part
  that changes, read with the same queries as the page.
- Actions (cancel, retry failed steps, re-run): POST + CSRF, through the same ``workflows.actions``
  functions as the API, for users with ``workflows.change_workflowrun`` (the "operate runs" permission);
  domain errors become admin messages. Cancelling, one run or many, asks for confirmation first.
- Workflows: nodes edited inline, the workflow validated on save through ``workflows.schema`` (the loader's rules
  and messages) and drawn on the page; "Trigger now" with a context JSON.

Over 400 lines because Django wants each ModelAdmin whole in one class: the run list's filters, search, bulk
actions with their confirmation and live refresh are one WorkflowRunAdmin. What the run page shows is built
in workflows.runpage; the timeline in workflows.timeline; the actions run in workflows.actions.
"""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import (
    Count,
    Min,
    Q,
    QuerySet,
    TextField,
)
from django.db.models.functions import Cast, Substr
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from pydantic import ValidationError as PydanticValidationError

from accounts import permissions
from agents.models import Agent
from config.jsonsafe import unstorable
from workflows import actions, dag, events, services, timeline
from workflows.display import (
    format_duration,
    status_badge,
    status_label,
    trigger_label,
)
from workflows.models import (
    OPEN_STEP_STATUSES,
    TERMINAL_RUN_STATUSES,
    InvalidTransition,
    RunStep,
    StepStatus,
    Workflow,
    WorkflowNode,
    WorkflowRun,
)
from workflows.runpage import run_page
from workflows.schema import WorkflowDefinition, problems

ERROR_EXCERPT_CHARS = 160


def may_operate(request: HttpRequest) -> bool:
    """Cancel, retry, re-run and trigger: the same permission the API checks (accounts.permissions)."""
    return permissions.allows(request.user, permissions.OPERATE)


# --- Workflows ------------------------------------------------------------------------------------------


class NodeFormSet(BaseInlineFormSet):
    """Validates the workflow with its nodes through ``workflows.schema``, the rules and messages of the loader."""

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
                    "name": data.get("name") or "",
                    "agent": agent.slug if agent else None,
                    "action": data.get("action") or "",
                    "inputs": {} if data.get("inputs") is None else data["inputs"],
                    "depends_on": data.get("depends_on") or [],
                    "retry": {
                        "max_attempts": data.get("max_attempts"),
                        "backoff_seconds": data.get("backoff_seconds"),
                        "backoff_max_seconds": data.get("backoff_max_seconds"),
                        "jitter": data.get("backoff_jitter"),
                    },
                    "timeout_seconds": data.get("timeout_seconds"),
                    "approval": {
                        "required": bool(data.get("requires_approval")),
                        "groups": data.get("approver_groups") or [],
                        "users": data.get("approver_users") or [],
                        "required_approvals": data.get("required_approvals"),
                        "timeout_seconds": data.get("approval_timeout_seconds"),
                        "timeout_action": data.get("approval_timeout_action"),
                        "allow_self_approval": bool(data.get("allow_self_approval")),
                    },
                }
            )
        workflow = self.instance
        definition = {
            "slug": workflow.slug,
            "name": workflow.name,
            "description": workflow.description,
            "enabled": workflow.enabled,
            "nodes": nodes,
        }
        known = set(Agent.objects.values_list("slug", flat=True))
        try:
            WorkflowDefinition.model_validate(definition, context={"known_agents": known})
        except PydanticValidationError as exc:
            where = f"workflow {workflow.slug!r}" if workflow.slug else "new workflow"
            raise ValidationError(problems(exc, definition, where=where)) from exc


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
        if obj is not None:
            context["dag"] = workflow_dag(obj)
        return super().render_change_form(request, context, *args, **kwargs)

    def trigger_view(self, request: HttpRequest, workflow_id: int) -> HttpResponse:
        """A form taking a context JSON; starts a run with trigger "admin" and opens its page."""
        if not may_operate(request):
            raise PermissionDenied
        workflow = get_object_or_404(Workflow, pk=workflow_id)
        form = TriggerForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                run, _ = actions.trigger(
                    workflow, acting_user=request.user, context=form.cleaned_data["context"], channel="admin"
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


def workflow_dag(workflow: Workflow) -> str:
    """The saved definition as a picture: steps, their dependencies and gates, each with its agent."""
    nodes = [
        dag.DagNode(
            key=node.key,
            name=node.name or node.key,
            depends_on=list(node.depends_on),
            gated=node.requires_approval,
            detail=f"agent {node.agent.slug}",
        )
        for node in workflow.nodes.select_related("agent").order_by("position", "key")
    ]
    return dag.render(nodes, label=f"Steps of {workflow.slug} and their dependencies", ident="workflow-dag")


# --- Runs -----------------------------------------------------------------------------------------------

LIVE_HEADER = "X-Console-Live"


def is_live(request: HttpRequest) -> bool:
    """A refresh from the page's own polling (console.js): only the parts that change are rendered."""
    return request.headers.get(LIVE_HEADER) == "1"


def with_step_counts(runs: list[WorkflowRun]) -> None:
    """Sets ``steps_total``, ``steps_done``, ``steps_failed`` and ``first_claim_at`` on the runs of a page, in one
    query over their steps. (As correlated subqueries of the page's query they would be computed for every
    row an OFFSET skips too: 5,000 rows for page 100.)"""
    counts: dict[Any, dict[str, Any]] = {
        row["run_id"]: dict(row)
        for row in RunStep.objects.filter(run_id__in=[run.pk for run in runs])
        .values("run_id")
        .annotate(
            total=Count("pk"),
            done=Count("pk", filter=Q(status=StepStatus.SUCCESS)),
            failed=Count("pk", filter=Q(status=StepStatus.FAILED)),
            first=Min("started_at"),
        )
        .order_by()
    }
    for run in runs:
        row = counts.get(run.pk, {})
        run.steps_total = row.get("total", 0)  # type: ignore[attr-defined]
        run.steps_done = row.get("done", 0)  # type: ignore[attr-defined]
        run.steps_failed = row.get("failed", 0)  # type: ignore[attr-defined]
        run.first_claim_at = row.get("first")  # type: ignore[attr-defined]


def _hex_range(prefix: str, length: int) -> tuple[str, str]:
    """The lowest and highest ``length``-digit hex strings that start with ``prefix``."""
    return prefix + "0" * (length - len(prefix)), prefix + "f" * (length - len(prefix))


class RunSearchMixin:
    """Search by run id or trace id (whole, or their first 8+ hex digits, as the list shows them), or else any
    text in the context.

    Ids are found through indexes: prefixes as ranges (``id BETWEEN ...``), which the primary key and the trace id
    index serve whatever the database's collation, since every id is lowercase hex of one length. A term that
    finds runs that way is an id; only a term that finds none is looked for in the contexts, through the trigram
    index of ``UPPER(context::text)`` (workflows/migrations/0004) where PostgreSQL has one.
    """

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WorkflowRun], search_term: str
    ) -> tuple[QuerySet[WorkflowRun], bool]:
        term = search_term.strip().rstrip("…")
        if not term:
            return queryset, False
        with contextlib.suppress(ValueError):
            # A whole run or trace id.
            return queryset.filter(Q(trace_id=term.lower()) | Q(id=uuid.UUID(term))), False
        compact = term.lower().replace("-", "")
        if 8 <= len(compact) < 32 and all(c in "0123456789abcdef" for c in compact):
            low, high = _hex_range(compact, 32)
            ids = Q(id__range=(uuid.UUID(low), uuid.UUID(high)))
            if "-" not in term:
                ids |= Q(trace_id__range=(low, high))
            if queryset.filter(ids).exists():
                return queryset.filter(ids), False
        return queryset.alias(context_text=Cast("context", TextField())).filter(context_text__icontains=term), False


def labelled_choices(labels: Callable[[str], str]) -> type[admin.ChoicesFieldListFilter]:
    """A choices filter that shows ``labels(value)`` instead of the enum's name ("Waiting for approval", "API")."""

    class LabelledChoicesFilter(admin.ChoicesFieldListFilter):
        def __init__(self, field: Any, *args: Any, **kwargs: Any) -> None:
            field = copy.copy(field)
            field.choices = [(value, labels(value)) for value, _ in field.flatchoices]
            super().__init__(field, *args, **kwargs)

    return LabelledChoicesFilter


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
        "error_excerpt",
        "trace_link",
    ]
    list_display_links = ["short_id"]
    list_filter = [
        ("status", labelled_choices(status_label)),
        "workflow",
        ("trigger", labelled_choices(trigger_label)),
        "created_at",
    ]
    search_fields = ["trace_id"]  # shows the search box; RunSearchMixin does the searching
    search_help_text = "Run id or trace id (or their first 8 characters), otherwise text in the context."
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
        response = super().changelist_view(request, {"title": "Run history", **(extra_context or {})})
        if isinstance(response, TemplateResponse) and response.context_data and "cl" in response.context_data:
            shown = list(response.context_data["cl"].result_list)  # evaluated here; the template reuses the rows
            with_step_counts(shown)
            response.context_data["live_open"] = sum(1 for run in shown if run.status not in TERMINAL_RUN_STATUSES)
            if is_live(request):
                response.template_name = "admin/workflows/workflowrun/change_list_live.html"
        return response

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowRun]:
        return (
            super()
            .get_queryset(request)
            .select_related("workflow", "triggered_by")
            .defer("definition", "context", "trace_context", "request_fingerprint", "error")
            .annotate(error_excerpt_text=Substr("error", 1, ERROR_EXCERPT_CHARS))
        )

    def action_checkbox(self, obj: WorkflowRun) -> SafeString:
        # Django renders this box through the form widget templates, a millisecond a row; the same markup,
        # written directly, with the run named in its label.
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="Select {}">',
            helpers.ACTION_CHECKBOX_NAME,
            obj.pk,
            obj,
        )

    @admin.display(description="Run", ordering="id")
    def short_id(self, run: WorkflowRun) -> str:
        return format_html('<code title="{}" data-run="{}">{}</code>', run.pk, run.pk, str(run.pk)[:8])

    @admin.display(description="Status", ordering="status")
    def status_display(self, run: WorkflowRun) -> str:
        return status_badge(run.status)

    @admin.display(description="Trigger", ordering="trigger")
    def trigger_display(self, run: WorkflowRun) -> str:
        who = run.triggered_by.get_username() if run.triggered_by else ""
        return format_html(
            '{}<span class="run-muted">{}</span>', trigger_label(run.trigger), f" · {who}" if who else ""
        )

    @admin.display(description="Started", ordering="created_at")
    def started(self, run: WorkflowRun) -> str:
        moment = timeline.run_start(run.started_at, getattr(run, "first_claim_at", None)) or run.created_at
        local = timezone.localtime(moment)
        return format_html(
            '<time datetime="{}" title="{}">{}<br>{}</time>',
            moment.isoformat(),
            local.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + local.strftime(" %Z"),
            local.strftime("%b %d"),
            local.strftime("%H:%M:%S"),
        )

    @admin.display(description="Duration")
    def duration(self, run: WorkflowRun) -> str:
        start = timeline.run_start(run.started_at, getattr(run, "first_claim_at", None))
        if start is None:
            return "—"
        end = run.finished_at if run.status in TERMINAL_RUN_STATUSES and run.finished_at else timezone.now()
        return format_duration((end - start).total_seconds())

    @admin.display(description="Steps")
    def progress(self, run: WorkflowRun) -> str:
        done, total = int(getattr(run, "steps_done", 0)), int(getattr(run, "steps_total", 0))
        failed = int(getattr(run, "steps_failed", 0))
        done_width = round(100 * done / total, 1) if total else 0
        failed_width = round(100 * failed / total, 1) if total else 0
        said = f"{done} of {total} steps succeeded" + (f", {failed} failed" if failed else "")
        return format_html(
            '<span class="run-progress" title="{}" aria-label="{}">'
            '<span class="run-progress-bar"><span class="done" style="width:{}%"></span>'
            '<span class="failed" style="width:{}%"></span></span>{}/{}{}</span>',
            said,
            said,
            done_width,
            failed_width,
            done,
            total,
            format_html(' <span class="run-progress-failed">{} failed</span>', failed) if failed else "",
        )

    @admin.display(description="Error")
    def error_excerpt(self, run: WorkflowRun) -> str:
        text = getattr(run, "error_excerpt_text", "") or ""
        if not text:
            return ""
        return format_html(
            '<span class="run-error-excerpt run-error-{}" title="{}">{}</span>', run.status.lower(), text, text
        )

    @admin.display(description="Trace")
    def trace_link(self, run: WorkflowRun) -> str:
        if not run.trace_id:
            return "—"
        url = events.telemetry.run_trace_url(run)
        if url is None:
            return format_html('<code class="run-muted" title="{}">{}…</code>', run.trace_id, run.trace_id[:8])
        return format_html(
            '<a class="trace-link" href="{}" target="_blank" rel="noopener" title="Open trace {} in Grafana" '
            'aria-label="Open trace {} in Grafana">{}…</a>',
            url,
            run.trace_id,
            run.trace_id,
            run.trace_id[:8],
        )

    # -- actions on selected runs (the list) and on one run (the run page)

    def _act(self, request: HttpRequest, runs: Any, action: str) -> WorkflowRun | None:
        """Runs ``action`` on each run through workflows.actions; reports each outcome; returns a new run."""
        done: list[str] = []
        created: WorkflowRun | None = None
        for run in runs:
            try:
                if action == "cancel":
                    actions.cancel(run, acting_user=request.user, channel="admin")
                    done.append(f"Cancelled run {run.pk}.")
                elif action == "retry":
                    actions.retry_failed_steps(run, acting_user=request.user)
                    done.append(f"Retrying the failed steps of run {run.pk}.")
                elif action == "rerun":
                    created = actions.rerun(run, acting_user=request.user)
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

    def _confirm_cancel(
        self, request: HttpRequest, runs: list[WorkflowRun], *, selected: bool, back: str
    ) -> TemplateResponse:
        """What cancelling these runs will do, and to how many, before anything is done."""
        open_runs = [run for run in runs if run.status not in TERMINAL_RUN_STATUSES]
        ids = [run.pk for run in open_runs]
        steps = dict(
            RunStep.objects.filter(run_id__in=ids, status__in=OPEN_STEP_STATUSES)
            .values("run_id")
            .annotate(n=Count("pk"))
            .order_by()
            .values_list("run_id", "n")
        )
        running = dict(
            RunStep.objects.filter(run_id__in=ids, status=StepStatus.RUNNING)
            .values("run_id")
            .annotate(n=Count("pk"))
            .order_by()
            .values_list("run_id", "n")
        )
        waiting = events.gates.waiting(ids)
        count = len(open_runs)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Cancel {count} run{pluralize(count)}?" if count else "Nothing to cancel",
            "opts": self.opts,
            "runs": [
                {
                    "run": run,
                    "badge": status_badge(run.status),
                    "open_steps": steps.get(run.pk, 0),
                    "running": running.get(run.pk, 0),
                    "approvals": waiting.get(run.pk, 0),
                    "url": reverse("admin:workflows_workflowrun_change", args=[run.pk]),
                }
                for run in open_runs
            ],
            "finished": [run for run in runs if run.status in TERMINAL_RUN_STATUSES],
            "count": count,
            "open_steps": sum(steps.values()),
            "running": sum(running.values()),
            "approvals": sum(waiting.values()),
            "selected": selected,
            "back": back,
            "action_url": reverse("admin:workflows_workflowrun_act", args=[runs[0].pk, "cancel"]) if runs else "",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/workflows/workflowrun/cancel_confirmation.html", context)

    @admin.action(description="Cancel selected runs…", permissions=["operate"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> TemplateResponse | None:
        # As Django's "delete selected": the first POST shows what would happen; the confirmation posts "post".
        if request.POST.get("post") == "yes":
            self._act(request, queryset, "cancel")
            return None
        runs = list(queryset.select_related("workflow").order_by("-created_at"))
        return self._confirm_cancel(request, runs, selected=True, back=request.get_full_path())

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
        """POST acts; a GET of "cancel" asks first (the run page's Cancel button leads here)."""
        if action not in ("cancel", "retry", "rerun"):
            raise Http404(f"unknown action {action!r}")
        if request.method == "GET" and action == "cancel":
            if not may_operate(request):
                raise PermissionDenied
            run = get_object_or_404(WorkflowRun.objects.select_related("workflow"), pk=run_id)
            back = reverse("admin:workflows_workflowrun_change", args=[run.pk])
            return self._confirm_cancel(request, [run], selected=False, back=back)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not may_operate(request):
            raise PermissionDenied
        run = get_object_or_404(WorkflowRun.objects.select_related("workflow"), pk=run_id)
        created = self._act(request, [run], action)
        target = created or run
        return HttpResponseRedirect(reverse("admin:workflows_workflowrun_change", args=[target.pk]))

    # -- the run page

    def run_view(self, request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
        """The run page; a live refresh (console.js) gets only its changing parts, with the same queries."""
        run = get_object_or_404(WorkflowRun.objects.select_related("workflow", "triggered_by", "rerun_of"), pk=run_id)
        if not self.has_view_or_change_permission(request, run):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": f"Run {str(run.pk)[:8]} of {run.workflow.name or run.workflow.slug}",
            "subtitle": None,
            "opts": self.opts,
            **run_page(run, operate=may_operate(request)),
        }
        template = "admin/workflows/workflowrun/run_live.html" if is_live(request) else None
        return TemplateResponse(request, template or "admin/workflows/workflowrun/run.html", context)
