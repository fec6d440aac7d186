from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApprovalRequest(models.Model):
    """A gated step waiting for operators: who may decide, how many must approve, and until when.

    Operators decide through ``approvals.services.decide``; a request that is no longer PENDING never
    changes again (``close`` refuses), so the first decisive outcome is the only one.
    """

    class Status(models.TextChoices):
        PENDING = "PENDING"
        APPROVED = "APPROVED"
        REJECTED = "REJECTED"
        EXPIRED = "EXPIRED"
        CANCELLED = "CANCELLED"

    run = models.ForeignKey("workflows.WorkflowRun", on_delete=models.CASCADE, related_name="approval_requests")
    step = models.ForeignKey("workflows.RunStep", on_delete=models.CASCADE, related_name="approval_requests")
    node_key = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    requested_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    required_approvals = models.PositiveIntegerField(default=1)
    approver_groups = models.JSONField(default=list, blank=True)
    approver_users = models.JSONField(default=list, blank=True)
    allow_self_approval = models.BooleanField(default=False)
    timeout_action = models.CharField(max_length=10, default="reject")
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decision_comment = models.TextField(blank=True)
    channel = models.CharField(max_length=10, blank=True)
    wait_seconds = models.FloatField(null=True, blank=True, help_text="From the request to its outcome.")
    span_id = models.CharField(max_length=16, blank=True, help_text="Span id of approval.wait, chosen up front.")

    class Meta:
        ordering = ["-requested_at"]
        permissions = [("decide_approval", "Can approve or reject gated steps")]
        indexes = [
            models.Index(fields=["status", "requested_at"]),
            models.Index(fields=["status", "expires_at"]),
        ]

    def __str__(self) -> str:
        return f"approval of {self.node_key} in run {self.run_id}"

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.PENDING

    def waited(self, now: datetime | None = None) -> float:
        """Seconds between the request and its outcome (or now, while it is open)."""
        end = self.decided_at or now or timezone.now()
        return max(0.0, (end - self.requested_at).total_seconds())

    def close(
        self,
        status: str,
        *,
        at: datetime,
        by: Any = None,
        comment: str = "",
        channel: str = "",
    ) -> None:
        """Records the outcome; refuses to touch a request that already has one. Caller holds the row lock."""
        if not self.is_open:
            raise ValueError(f"approval request {self.pk} is already {self.status}")
        if status == self.Status.PENDING:
            raise ValueError("an outcome cannot be PENDING")
        self.status = status
        self.decided_at = at
        self.decided_by = by
        self.decision_comment = comment
        self.channel = channel
        self.wait_seconds = self.waited(at)
        self.save(update_fields=["status", "decided_at", "decided_by", "decision_comment", "channel", "wait_seconds"])


class ApprovalDecision(models.Model):
    """The audit row of one operator's decision on one request; a user counts once toward the quorum."""

    class Decision(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    class Channel(models.TextChoices):
        ADMIN = "admin"
        API = "api"

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="decisions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="approval_decisions")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField(blank=True)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    decided_at = models.DateTimeField(default=timezone.now)
    wait_seconds = models.FloatField(help_text="From the request to this decision.")

    class Meta:
        ordering = ["decided_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["request", "user"], name="approvaldecision_one_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.decision} by {self.user_id} on request {self.request_id}"


class PendingApproval(ApprovalRequest):
    """The operators' queue in the admin: the requests still waiting for a decision."""

    class Meta:
        proxy = True
        verbose_name = "pending approval"
        verbose_name_plural = "pending approvals"
