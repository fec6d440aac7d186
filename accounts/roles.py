"""The two roles the console is built around, kept as Django groups after every migrate.

- operators: see everything, decide approvals, cancel / retry / re-run runs, trigger workflows.
- viewers: see everything, change nothing.

Membership is managed in the admin; the groups' permissions are reset to these lists on each migrate so
that a new permission reaches existing installations.
"""

from __future__ import annotations

from typing import Any

VIEW = [
    "workflows.view_workflow",
    "workflows.view_workflownode",
    "workflows.view_workflowrun",
    "workflows.view_runstep",
    "workflows.view_runtransition",
    "agents.view_agent",
    "agents.view_agentrun",
    "approvals.view_approvalrequest",
]
ROLES: dict[str, list[str]] = {
    "viewers": VIEW,
    "operators": [*VIEW, "approvals.decide_approval", "workflows.change_workflowrun", "workflows.change_workflow"],
}


def ensure_roles(**kwargs: Any) -> None:
    from django.contrib.auth.models import Group, Permission

    for name, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        found: list[Permission] = []
        for perm in perms:
            app_label, codename = perm.split(".")
            found.extend(Permission.objects.filter(content_type__app_label=app_label, codename=codename))
        group.permissions.set(found)
