"""Agents in the admin: config validated by the agent type's executor, secret values masked.

Secret values (the executor's ``secret_keys``: e.g. the http agent's ``headers``, the command agent's
``env``) never go back to the browser: the form shows each of them as ``MASK``, and a submitted ``MASK``
means "keep the stored value". Users who may only view agents see the masked config too.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from agents.executors import EXECUTORS, UnknownAgentType, executor_class
from agents.models import Agent, AgentRun
from config.adminkit import ReadOnlyModelAdmin

MASK = "********"


def secret_keys(agent_type: str) -> frozenset[str]:
    try:
        return executor_class(agent_type).secret_keys
    except UnknownAgentType:
        return frozenset()


def mask_config(config: Any, secrets: frozenset[str]) -> Any:
    """The config with every secret value replaced by MASK (inside a mapping, each of its values)."""
    if not isinstance(config, dict):
        return config
    masked = dict(config)
    for key in secrets & masked.keys():
        value = masked[key]
        masked[key] = {k: MASK for k in value} if isinstance(value, dict) else MASK
    return masked


def unmask_config(submitted: dict[str, Any], stored: Any, secrets: frozenset[str]) -> tuple[dict[str, Any], list[str]]:
    """Puts the stored secret back wherever MASK was submitted; problems name a MASK with nothing behind it."""
    stored = stored if isinstance(stored, dict) else {}
    config = dict(submitted)
    problems = []
    for key in secrets & config.keys():
        value, kept = config[key], stored.get(key)
        if value == MASK:
            if kept is None:
                problems.append(f"{key}: enter the value; there is no stored value to keep")
            else:
                config[key] = kept
        elif isinstance(value, dict):
            merged = dict(value)
            for name, item in value.items():
                if item == MASK:
                    if isinstance(kept, dict) and name in kept:
                        merged[name] = kept[name]
                    else:
                        problems.append(f"{key}.{name}: enter the value; there is no stored value to keep")
            config[key] = merged
    return config, problems


class AgentForm(forms.ModelForm):
    type = forms.ChoiceField(choices=[])

    class Meta:
        model = Agent
        fields = ["slug", "name", "type", "config", "enabled", "description"]
        help_texts = {
            "config": f"JSON object; secret values are shown as {MASK} — leave them as they are to keep them.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        types = sorted(EXECUTORS)
        if self.instance.type and self.instance.type not in EXECUTORS:
            types.append(self.instance.type)
        type_field = self.fields["type"]
        assert isinstance(type_field, forms.ChoiceField)
        type_field.choices = [(t, t) for t in types]
        if self.instance.pk:
            self.initial["config"] = mask_config(self.instance.config, secret_keys(self.instance.type))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        assert cleaned is not None  # ModelForm.clean returns cleaned_data
        agent_type = cleaned.get("type")
        config = cleaned.get("config")
        if agent_type is None or "config" not in cleaned:
            return cleaned
        if not isinstance(config, dict):
            self.add_error("config", "The config must be a JSON object.")
            return cleaned
        try:
            executor = executor_class(agent_type)
        except UnknownAgentType as exc:
            self.add_error("type", str(exc))
            return cleaned
        stored = self.instance.config if self.instance.pk else {}
        config, problems = unmask_config(config, stored, executor.secret_keys)
        problems += executor.validate_config(config)
        for problem in problems:
            self.add_error("config", problem)
        cleaned["config"] = config
        return cleaned


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentForm
    list_display = ["slug", "name", "type", "enabled", "updated_at"]
    list_filter = ["type", "enabled"]
    search_fields = ["slug", "name"]

    def get_fields(self, request: HttpRequest, obj: Agent | None = None) -> list[str | list[str] | tuple[str, ...]]:
        fields: list[str | list[str] | tuple[str, ...]] = list(AgentForm.Meta.fields)
        if obj is not None and not self.has_change_permission(request, obj):
            # The read-only view would render the stored value; show the masked one instead.
            fields[fields.index("config")] = "masked_config"
        return fields

    @admin.display(description="Config")
    def masked_config(self, obj: Agent) -> str:
        masked = mask_config(obj.config, secret_keys(obj.type))
        return format_html("<pre>{}</pre>", json.dumps(masked, indent=2, sort_keys=True))

    def get_readonly_fields(self, request: HttpRequest, obj: Agent | None = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and not self.has_change_permission(request, obj):
            readonly.append("masked_config")
        return readonly


@admin.register(AgentRun)
class AgentRunAdmin(ReadOnlyModelAdmin):
    """Attempts are records of what happened; they are read on the run page and searched here."""

    list_display = [
        "run_link",
        "step",
        "attempt",
        "agent_type",
        "status",
        "error_type",
        "started_at",
        "duration_seconds",
    ]
    list_filter = ["status", "agent_type"]
    list_select_related = ["step"]
    search_fields = ["=run__id", "error_type", "worker_id"]
    ordering = ["-started_at"]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).defer("input", "output")

    @admin.display(description="Run", ordering="run")
    def run_link(self, obj: AgentRun) -> str:
        url = reverse("admin:workflows_workflowrun_change", args=[obj.run_id])
        return format_html('<a href="{}"><code>{}</code></a>', url, str(obj.run_id)[:8])
