from django.contrib import admin

from agents.models import Agent, AgentRun


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["slug", "type", "enabled", "updated_at"]
    list_filter = ["type", "enabled"]
    search_fields = ["slug", "name"]


@admin.register(AgentRun)
class AgentRunAdmin(admin.ModelAdmin):
    list_display = [
        "run",
        "step",
        "attempt",
        "agent_type",
        "status",
        "error_type",
        "started_at",
        "duration_seconds",
    ]
    list_filter = ["status", "agent_type"]
    list_select_related = ["run", "step"]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        return [f.name for f in AgentRun._meta.fields]
