"""Which alert records the retention pass (workflows.retention) may delete: older than ALERT_RETENTION_DAYS.

An event stays while a kept resolution links to it as its firing event or while a run it started is still
active (a resolved notification must still find it to end that run); a delivery stays while a kept event
points to it or a run it started is active. Runs outlive their alert records: they keep ``trigger_detail``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, Model, OuterRef, Q, QuerySet

from alerts.models import AlertDelivery, AlertEvent
from workflows.models import ACTIVE_RUN_STATUSES

KINDS = ("alert_events", "alert_deliveries")


def candidates(now: datetime) -> dict[str, QuerySet | None]:
    """Per kind, the records old enough to go (None: kept forever, ALERT_RETENTION_DAYS=0)."""
    days = settings.ALERT_RETENTION_DAYS
    if not days:
        return dict.fromkeys(KINDS)
    cutoff = now - timedelta(days=days)
    events = _alert_events(cutoff)
    return {"alert_events": events, "alert_deliveries": _alert_deliveries(cutoff, events)}


def _with_active_run(through: type[Model], column: str) -> Exists:
    """The row (outer query) is linked to a run that has not finished."""
    return Exists(
        through._default_manager.filter(**{column: OuterRef("pk")}, workflowrun__status__in=ACTIVE_RUN_STATUSES)
    )


def _alert_events(cutoff: datetime) -> QuerySet:
    through = AlertEvent.runs.through
    kept = Q(last_seen_at__gte=cutoff) | Q(_with_active_run(through, "alertevent_id"))
    kept_resolution = Exists(AlertEvent.objects.filter(kept, firing_event=OuterRef("pk")))
    return AlertEvent.objects.exclude(kept).exclude(kept_resolution)


def _alert_deliveries(cutoff: datetime, prunable_events: QuerySet) -> QuerySet:
    kept_event = Exists(AlertEvent.objects.filter(delivery=OuterRef("pk")).exclude(pk__in=prunable_events.values("pk")))
    active_run = _with_active_run(AlertDelivery.runs.through, "alertdelivery_id")
    return AlertDelivery.objects.filter(received_at__lt=cutoff).exclude(kept_event).exclude(active_run)
