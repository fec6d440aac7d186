from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApprovalRequest(models.Model):
    """A gated step waiting for operators: who may decide, how many must approve, and until when."""

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
