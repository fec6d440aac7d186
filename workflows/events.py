"""What the runner reports as it works: structured log events, metrics and spans hang off these calls.

The runner calls these functions at each point of interest; observability decides what to make of them,
so the state machine stays free of telemetry code.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context

from observability import hooks

if TYPE_CHECKING:
    from agents.models import AgentRun
    from approvals.models import ApprovalRequest
    from workflows.models import RunStep, WorkflowRun

logger = logging.getLogger("workflows.runs")


def run_transitioned(run: WorkflowRun, previous: str, target: str, *, reason: str, actor: str) -> None:
    with hooks.in_run(run):
        logger.info(
            "run %s %s -> %s",
            run.id,
            previous or "(new)",
            target,
            extra={
                "event": "run.transition",
                "run_id": str(run.id),
                "workflow": run.workflow_slug,
                "from_status": previous,
                "to_status": target,
                "reason": reason,
                "actor": actor,
            },
        )
    hooks.run_transitioned(run, previous, target)


def attempt_finished(run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any]) -> None:
    with hooks.in_run(run):
        log = logger.info if attempt.status == "SUCCESS" else logger.warning
        log(
            "step %s attempt %s %s",
            step.key,
            attempt.attempt,
            attempt.status,
            extra={
                "event": "step.attempt",
                "run_id": str(run.id),
                "workflow": run.workflow_slug,
                "step": step.key,
                "attempt": attempt.attempt,
                "status": attempt.status,
                "agent_type": attempt.agent_type,
                "error_type": attempt.error_type,
                "duration_seconds": attempt.duration_seconds,
            },
        )
    hooks.attempt_finished(run, step, attempt, node)


def retry_scheduled(run: WorkflowRun, step: RunStep, node: dict[str, Any], *, reason: str, delay: float) -> None:
    with hooks.in_run(run):
        logger.info(
            "step %s retry in %.2fs (%s)",
            step.key,
            delay,
            reason,
            extra={
                "event": "step.retry",
                "run_id": str(run.id),
                "step": step.key,
                "reason": reason,
                "delay": delay,
            },
        )
    hooks.retry_scheduled(node, reason)


def attempt_started(run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any]) -> None:
    with hooks.in_run(run):
        logger.debug(
            "step %s attempt %s started",
            step.key,
            attempt.attempt,
            extra={"event": "step.start", "run_id": str(run.id), "step": step.key, "attempt": attempt.attempt},
        )


def attempt_scope(
    run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any]
) -> AbstractContextManager[Any]:
    """Wraps the execution of one attempt: its agent.execute span is current inside."""
    return hooks.attempt_scope(run, step, attempt, node)


def current_context() -> Any:
    return otel_context.get_current()


def attach_context(ctx: Any) -> Any:
    return otel_context.attach(ctx)


def detach_context(token: Any) -> None:
    otel_context.detach(token)


def run_closing(run: WorkflowRun) -> None:
    """The run is about to end while steps may still be open: close what waits on it."""
    from approvals.services import cancel_open_requests

    cancel_open_requests(run)


def approval_requested(request: ApprovalRequest) -> None:
    """A gated step now waits for operators (the approval.wait span starts at ``request.requested_at``)."""
    with hooks.in_run_of(request):
        logger.info(
            "step %s of run %s waits for approval",
            request.node_key,
            request.run_id,
            extra={
                "event": "approval.requested",
                "run_id": str(request.run_id),
                "step": request.node_key,
                "approval_id": request.pk,
                "required_approvals": request.required_approvals,
                "expires_at": request.expires_at.isoformat() if request.expires_at else None,
            },
        )
    hooks.approval_requested(request)


def approval_decided(request: ApprovalRequest, decision: str, approver: str, channel: str, wait_seconds: float) -> None:
    """A request reached its outcome (approved, rejected, expired or cancelled); called after commit."""
    with hooks.in_run_of(request):
        logger.info(
            "approval of step %s in run %s: %s after %.1fs",
            request.node_key,
            request.run_id,
            decision,
            wait_seconds,
            extra={
                "event": "approval.outcome",
                "run_id": str(request.run_id),
                "step": request.node_key,
                "approval_id": request.pk,
                "decision": decision,
                "approver": approver,
                "channel": channel,
                "wait_seconds": wait_seconds,
            },
        )
    hooks.approval_decided(request, decision, approver, channel, wait_seconds)
