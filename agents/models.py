from __future__ import annotations

from django.db import models


class Agent(models.Model):
    """A configured executor that workflow steps call: a type from the registry plus its configuration."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200, blank=True)
    type = models.CharField(max_length=50, help_text="Executor type from the registry, e.g. http or command.")
    config = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class AgentRun(models.Model):
    """One attempt of one step of a run: what went in, what came out, who ran it and for how long."""

    class Status(models.TextChoices):
        RUNNING = "RUNNING"
        SUCCESS = "SUCCESS"
        FAILED = "FAILED"
        TIMED_OUT = "TIMED_OUT"
        LOST = "LOST"  # the worker holding the lease disappeared; the reaper closed the attempt
        CANCELLED = "CANCELLED"

    run = models.ForeignKey("workflows.WorkflowRun", on_delete=models.CASCADE, related_name="attempts")
    step = models.ForeignKey("workflows.RunStep", on_delete=models.CASCADE, related_name="attempt_rows")
    attempt = models.PositiveIntegerField()
    agent = models.ForeignKey(Agent, null=True, on_delete=models.SET_NULL, related_name="runs")
    agent_type = models.CharField(max_length=50)
    action = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error_type = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)
    worker_id = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    span_id = models.CharField(max_length=16, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]
        constraints = [models.UniqueConstraint(fields=["step", "attempt"], name="agentrun_one_row_per_attempt")]
        indexes = [models.Index(fields=["run", "started_at"])]

    def __str__(self) -> str:
        return f"{self.step_id}#{self.attempt}"
