"""Who may do what: one table of operations, each with the Django permission it needs and the token scope
that covers it. The admin and the API both ask ``allows``/``refusal`` here, so a user who may not do
something in the console may not do it over the API either, with a session or with a token.

A token acts as its user: it may do what its user's permissions allow, and its scopes can only narrow
that. A superuser holds every permission; everyone else gets them from the roles (accounts/roles.py) or
directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class HasScopes(Protocol):
    scopes: list[str]


@dataclass(frozen=True)
class Operation:
    """Something a user does: the Django permissions that allow it (any one of them) and the token scope."""

    does: str  # completes "may ...", e.g. "trigger workflows"
    permissions: tuple[str, ...]
    scope: str


# The "operate runs" permission of the console: cancel, retry, re-run and trigger.
OPERATE_PERMISSION = "workflows.change_workflowrun"
DECIDE_PERMISSION = "approvals.decide_approval"

VIEW_WORKFLOWS = Operation("view workflows", ("workflows.view_workflow",), "read")
VIEW_RUNS = Operation("view runs", ("workflows.view_workflowrun",), "read")
# As in the console: whoever may decide approval requests may also see them.
VIEW_APPROVALS = Operation("view approval requests", ("approvals.view_approvalrequest", DECIDE_PERMISSION), "read")
TRIGGER = Operation("trigger workflows", (OPERATE_PERMISSION,), "trigger")
OPERATE = Operation("cancel, retry and re-run runs", (OPERATE_PERMISSION,), "trigger")
DECIDE = Operation("decide approval requests", (DECIDE_PERMISSION,), "approve")

OPERATIONS = (VIEW_WORKFLOWS, VIEW_RUNS, VIEW_APPROVALS, TRIGGER, OPERATE, DECIDE)
SCOPES = ("trigger", "read", "approve")


def allows(user: Any, operation: Operation) -> bool:
    """Whether ``user`` (signed in and active) holds a permission that allows ``operation``."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return any(user.has_perm(permission) for permission in operation.permissions)


def refusal(user: Any, operation: Operation, token: HasScopes | None = None) -> str | None:
    """Why ``user`` (acting through ``token``, if any) may not do ``operation``, or None when they may."""
    if token is not None and operation.scope not in token.scopes:
        return f"this API token lacks the {operation.scope!r} scope (needed to {operation.does})"
    if not allows(user, operation):
        name = getattr(user, "username", "") or "anonymous"
        needed = " or ".join(operation.permissions)
        return f"{name} lacks the permission to {operation.does} ({needed})"
    return None


def scope_grants(user: Any, scopes: tuple[str, ...] | list[str]) -> dict[str, list[Operation]]:
    """For each scope, the operations it covers that ``user`` may actually do (what a new token can do)."""
    return {scope: [op for op in OPERATIONS if op.scope == scope and allows(user, op)] for scope in scopes}
