"""What the alert webhook keeps: every delivery as it arrived, and every alert it has acted on."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AlertDelivery(models.Model):
    """One authenticated POST to /webhooks/grafana, stored before it is processed.

    The raw body is committed in its own transaction first, so a delivery whose processing fails is never
    lost: it stays visible in the admin with outcome ``error`` and its message, and can be replayed there.
    A rejected delivery (4xx) keeps the reason in ``error``.
    """

    class Source(models.TextChoices):
        GRAFANA = "grafana"
        ALERTMANAGER = "alertmanager"
        UNKNOWN = "unknown"

    class Outcome(models.TextChoices):
        RECEIVED = "received", "received (not processed yet)"
        PROCESSED = "processed", "processed (runs started)"
        DEDUPLICATED = "deduplicated", "deduplicated (no new alert)"
        REJECTED = "rejected", "rejected (bad request)"
        ERROR = "error", "error (processing failed)"

    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.UNKNOWN)
    status = models.CharField(max_length=10, blank=True, help_text="The notification's firing/resolved.")
    group_key = models.CharField(max_length=1000, blank=True)
    alert_count = models.PositiveIntegerField(default=0)
    headers = models.JSONField(default=dict, blank=True, help_text="Relevant request headers; never Authorization.")
    content_type = models.CharField(max_length=200, blank=True)
    raw_body = models.BinaryField(
        null=True,
        blank=True,
        help_text="The request body byte for byte as received, before any Content-Encoding is decoded.",
    )
    body = models.TextField(
        blank=True,
        help_text="The request body as text: Content-Encoding decoded, then UTF-8 (invalid bytes and NUL as U+FFFD).",
    )
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.RECEIVED, db_index=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    runs = models.ManyToManyField("workflows.WorkflowRun", blank=True, related_name="alert_deliveries")
    attempts = models.PositiveIntegerField(default=0, help_text="Times it was processed (1 + replays).")
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "observability_alertdelivery"  # created by the observability app, which held it first
        ordering = ["-received_at", "-id"]
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"alert delivery {self.pk} ({self.source}, {self.outcome})"


class AlertEvent(models.Model):
    """An alert state the webhook acted on, keyed by (fingerprint, status, startsAt).

    The unique key is what makes deduplication race-safe: the two copies a Grafana HA pair delivers at
    the same instant both try to insert the row, one waits for the other, and the loser finds the alert
    already notified within the window. A resolved event links to the firing event it ends.
    """

    fingerprint = models.CharField(max_length=200)
    status = models.CharField(max_length=10)
    starts_at = models.DateTimeField()
    alertname = models.CharField(max_length=300, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    notified_at = models.DateTimeField(help_text="When it last started a run; repeats within the window do not.")
    duplicates = models.PositiveIntegerField(default=0)
    delivery = models.ForeignKey(AlertDelivery, null=True, on_delete=models.SET_NULL, related_name="events")
    runs = models.ManyToManyField("workflows.WorkflowRun", blank=True, related_name="alert_events")
    firing_event = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="resolutions",
        help_text="For a resolved alert: the firing alert it resolves.",
    )

    class Meta:
        db_table = "observability_alertevent"
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(fields=["fingerprint", "status", "starts_at"], name="alertevent_unique_alert")
        ]

    def __str__(self) -> str:
        return f"{self.alertname or self.fingerprint} {self.status} since {self.starts_at:%Y-%m-%d %H:%M:%S}"
