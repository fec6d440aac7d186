"""The structured run log: one line per run transition, attempt, retry and approval outcome.

Observers of workflows.events and approvals.events (connected in ObservabilityConfig.ready()). The lines keep
the ``workflows.runs`` logger, the name operators filter by, and are written with the run's trace current,
so every line carries its trace id.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from observability.hooks import in_run, in_run_of

if TYPE_CHECKING:
    from agents.models import AgentRun
    from approvals.models import ApprovalRequest
    from workflows.models import RunStep, WorkflowRun

logger = logging.getLogger("workflows.runs")


def run_transitioned(run: WorkflowRun, previous: str, target: str, *, reason: str, actor: str) -> None:
    with in_run(run):
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


def attempt_finished(run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any]) -> None:
    with in_run(run):
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


def retry_scheduled(run: WorkflowRun, step: RunStep, node: dict[str, Any], *, reason: str, delay: float) -> None:
    with in_run(run):
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


def attempt_started(run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any]) -> None:
    # A debug line: where it is not written (the default level is INFO), an attempt costs one record, its outcome's,
    # and nothing else here, not even making the run's trace current.
    if not logger.isEnabledFor(logging.DEBUG):
        return
    with in_run(run):
        logger.debug(
            "step %s attempt %s started",
            step.key,
            attempt.attempt,
            extra={"event": "step.start", "run_id": str(run.id), "step": step.key, "attempt": attempt.attempt},
        )


def approval_requested(request: ApprovalRequest) -> None:
    with in_run_of(request):
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


def approval_decided(request: ApprovalRequest, decision: str, approver: str, channel: str, wait_seconds: float) -> None:
    with in_run_of(request):
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
