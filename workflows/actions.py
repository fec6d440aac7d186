"""Operator actions on runs, one function each: trigger, re-run, cancel, retry the failed steps.

The console and the API call only these (approvals have theirs in ``approvals.services.decide``). Each one

- takes the acting user as the keyword ``acting_user`` and, from the API, the ``token`` it came with;
- checks the permission itself (accounts.permissions, the one table for console and API), so no caller can
  forget it: PermissionDenied names what is missing;
- leaves its audit row through the state change it makes: the run's RunTransition with the actor's name
  (created PENDING by a trigger, CANCELLED, RUNNING again for a retry);
- queues work only once its transaction commits (``runner.enqueue_with_transaction``).

A run that cannot make the move raises InvalidTransition; a disabled workflow, WorkflowDisabled.
"""

from __future__ import annotations

from typing import Any, Literal

from django.core.exceptions import PermissionDenied

from accounts import permissions
from accounts.permissions import HasScopes, Operation
from workflows import runner, services
from workflows.models import TriggerSource, Workflow, WorkflowRun

Channel = Literal["admin", "api"]


def _actor(acting_user: Any, operation: Operation, token: HasScopes | None) -> str:
    """The acting user's name, once they (through ``token``, if any) may do ``operation``."""
    problem = permissions.refusal(acting_user, operation, token)
    if problem:
        raise PermissionDenied(problem)
    return str(acting_user.get_username())


def trigger(
    workflow: Workflow,
    *,
    acting_user: Any,
    context: dict[str, Any],
    channel: Channel,
    token: Any = None,
    idempotency_key: str | None = None,
    definition: dict[str, Any] | None = None,
) -> tuple[WorkflowRun, bool]:
    """Starts a run of ``workflow`` (see services.trigger_workflow); returns (run, created).

    ``definition``: the workflow's snapshot when the caller has read it already (services.workflow_with_definition).
    """
    actor = _actor(acting_user, permissions.TRIGGER, token)
    if channel == "api":
        source, detail = TriggerSource.API, f"token {token.prefix}" if token else "session"
    else:
        source, detail = TriggerSource.ADMIN, f"admin: {actor}"
    return services.trigger_workflow(
        workflow,
        context=context,
        trigger=source,
        trigger_detail=detail,
        user=acting_user,
        idempotency_key=idempotency_key,
        definition=definition,
    )


def rerun(run: WorkflowRun, *, acting_user: Any, token: HasScopes | None = None) -> WorkflowRun:
    """A new run of the same workflow with the same context, linked to ``run``."""
    _actor(acting_user, permissions.OPERATE, token)
    return services.rerun(run, user=acting_user)


def cancel(run: WorkflowRun, *, acting_user: Any, channel: Channel, token: HasScopes | None = None) -> None:
    """Cancels a run in flight: its open steps are cancelled, its open approvals closed."""
    actor = _actor(acting_user, permissions.OPERATE, token)
    reason = f"cancelled by {actor} via api" if channel == "api" else f"cancelled in the admin by {actor}"
    runner.cancel_run(run, reason=reason, actor=actor)


def retry_failed_steps(run: WorkflowRun, *, acting_user: Any, token: HasScopes | None = None) -> None:
    """Runs the failed (and cancelled) steps of a FAILED run again, with a fresh retry budget."""
    actor = _actor(acting_user, permissions.OPERATE, token)
    runner.retry_run(run, actor=actor)
