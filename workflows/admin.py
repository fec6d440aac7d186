from django.contrib import admin
from django.http import HttpRequest

from workflows.models import RunStep, RunTransition, Workflow, WorkflowNode, WorkflowRun


class WorkflowNodeInline(admin.TabularInline):
    model = WorkflowNode
    extra = 0
    fields = [
        "position",
        "key",
        "agent",
        "action",
        "depends_on",
        "inputs",
        "max_attempts",
        "timeout_seconds",
        "requires_approval",
    ]


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "enabled", "version", "updated_at"]
    list_filter = ["enabled"]
    search_fields = ["slug", "name"]
    readonly_fields = ["version", "source_file", "created_at", "updated_at"]
    inlines = [WorkflowNodeInline]


class RunStepInline(admin.TabularInline):
    model = RunStep
    extra = 0
    can_delete = False
    fields = ["key", "status", "attempts", "error", "started_at", "finished_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class RunTransitionInline(admin.TabularInline):
    model = RunTransition
    extra = 0
    can_delete = False
    fields = ["at", "from_status", "to_status", "reason", "actor"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(WorkflowRun)
class WorkflowRunAdmin(admin.ModelAdmin):
    list_display = ["id", "workflow", "status", "trigger", "created_at", "finished_at"]
    list_filter = ["status", "trigger", "workflow"]
    search_fields = ["=id", "=trace_id"]
    list_select_related = ["workflow"]
    inlines = [RunStepInline, RunTransitionInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [f.name for f in WorkflowRun._meta.fields]
