"""What approvals announce: a gate's request was opened, and a request reached its outcome.

Events of the core's kind (workflows.events.Event); telemetry observes them (the approval.wait span, the
structured log, the wait histogram).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workflows.events import event

if TYPE_CHECKING:
    from approvals.models import ApprovalRequest


def _requested(request: ApprovalRequest) -> None: ...
def _decided(request: ApprovalRequest, decision: str, approver: str, channel: str, wait_seconds: float) -> None: ...


# A gated step now waits for operators, inside the run's transaction (the approval.wait span starts at
# ``request.requested_at``).
approval_requested = event("approval_requested", _requested)
# A request reached its outcome (approved, rejected, expired or cancelled); published after commit.
approval_decided = event("approval_decided", _decided)
