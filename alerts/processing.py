"""Store first, then process: from a stored delivery to deduplicated alerts and the runs they start.

``store`` commits the raw delivery on its own. ``process`` (the webhook, and a replay from the admin) reads
the stored body, validates it, claims each alert's (fingerprint, status, startsAt) row and starts one run
for the group when any alert in it is new within WEBHOOK_DEDUP_WINDOW_SECONDS. Claims and the run are one
transaction: if starting the run fails nothing is claimed, the delivery shows outcome ``error`` and a
replay (or the sender's retry) processes it again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from alerts import mapping
from alerts.auth import SIGNATURE_HEADERS
from alerts.models import AlertDelivery, AlertEvent
from alerts.payload import Alert, Notification, PayloadError, parse
from observability import metrics
from workflows.models import TriggerSource, Workflow, WorkflowRun

logger = logging.getLogger("alerts")

RESOLVED_REASON = "alert resolved"
ACTOR = "alert-webhook"
_KEPT_HEADERS = (
    "Content-Type",
    "Content-Length",
    "User-Agent",
    "X-Forwarded-For",
    "X-Request-Id",
    "Traceparent",
    "Tracestate",
    *SIGNATURE_HEADERS,
)


class ProcessingError(Exception):
    """Processing a valid payload failed on the service's side (the sender may retry; so may an operator)."""


@dataclass
class Result:
    """What processing answered: the HTTP status and JSON body the webhook returns."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers worth keeping with a delivery; never Authorization or cookies."""
    names = [*_KEPT_HEADERS]
    if settings.WEBHOOK_TIMESTAMP_HEADER:
        names.append(settings.WEBHOOK_TIMESTAMP_HEADER)
    return {name: headers[name][:1000] for name in names if headers.get(name)}


def store(body: bytes, headers: Mapping[str, str]) -> AlertDelivery:
    """Commits the delivery as received, before anything else can fail."""
    text = body.decode("utf-8", errors="replace")
    with transaction.atomic():
        return AlertDelivery.objects.create(
            received_at=timezone.now(),
            headers=kept_headers(headers),
            content_type=(headers.get("Content-Type") or "")[:200],
            body=text.replace("\x00", "\ufffd"),
        )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return not media or media == "application/json" or media.endswith("+json")


def _reject(delivery: AlertDelivery, status: int, message: str, **extra: Any) -> Result:
    delivery.outcome = AlertDelivery.Outcome.REJECTED
    delivery.http_status = status
    delivery.error = message
    delivery.processed_at = timezone.now()
    delivery.save(update_fields=["outcome", "http_status", "error", "processed_at", "attempts", "source", "status"])
    metrics.record_webhook_alert(source=delivery.source, status=delivery.status or "unknown", outcome="rejected")
    logger.warning("alert delivery %s rejected (%s): %s", delivery.pk, status, message)
    return Result(status, {"detail": message, "deliveryId": delivery.pk, **extra})


def decode(delivery: AlertDelivery, *, utf8: bool = True) -> tuple[Notification | None, Result | None]:
    """The validated notification of a stored delivery, or the 4xx result that rejects it."""
    if not _is_json(delivery.content_type):
        message = f"Content-Type must be application/json, not {delivery.content_type!r}"
        return None, _reject(delivery, 415, message)
    if not utf8:
        return None, _reject(delivery, 400, "malformed JSON: the body is not valid UTF-8")
    try:
        data = json.loads(delivery.body)
    except json.JSONDecodeError as exc:
        return None, _reject(delivery, 400, f"malformed JSON: {exc}")
    except RecursionError:
        return None, _reject(delivery, 400, "malformed JSON: nested too deeply")
    try:
        notification = parse(data)
    except PayloadError as exc:
        if isinstance(data, dict) and data.get("version") in ("1", "4"):
            delivery.source = "grafana" if data["version"] == "1" else "alertmanager"
        return None, _reject(delivery, 422, str(exc), field=exc.field)
    return notification, None


def process(delivery: AlertDelivery, *, utf8: bool = True) -> Result:
    """Validates and acts on a stored delivery; records the outcome on it. Never raises for bad input.

    ``utf8=False``: the body as received was not UTF-8 (the stored copy has replacement characters).
    """
    delivery.attempts += 1
    notification, rejected = decode(delivery, utf8=utf8)
    if rejected is not None:
        return rejected
    assert notification is not None
    delivery.source = notification.source
    delivery.status = notification.status
    delivery.group_key = notification.group_key
    delivery.alert_count = len(notification.alerts)
    try:
        run_ids, fresh = start_runs(delivery, notification)
    except Exception as exc:
        # The claims rolled back with the failure, so a replay (or the sender's retry) starts over.
        logger.exception("alert delivery %s could not be processed", delivery.pk)
        delivery.outcome = AlertDelivery.Outcome.ERROR
        delivery.http_status = 503
        delivery.error = f"{type(exc).__name__}: {exc}"[:5000]
        delivery.processed_at = timezone.now()
        delivery.save()
        for alert in notification.alerts:
            metrics.record_webhook_alert(source=notification.source, status=alert.status, outcome="error")
        return Result(503, {"detail": f"processing failed: {delivery.error}", "deliveryId": delivery.pk})
    delivery.outcome = AlertDelivery.Outcome.PROCESSED if run_ids else AlertDelivery.Outcome.DEDUPLICATED
    delivery.http_status = 200
    delivery.error = ""
    delivery.processed_at = timezone.now()
    delivery.save()
    duplicates = len(notification.alerts) - fresh
    return Result(200, {"workflowRunIds": run_ids, "deliveryId": delivery.pk, "deduplicated": duplicates})


def _claim(alert: Alert, delivery: AlertDelivery, now: datetime) -> tuple[AlertEvent, bool]:
    """Records the alert; True when it was not notified within the window (so it counts as new).

    Two deliveries of the same alert at the same instant both try the INSERT; the unique key makes one
    wait for the other's commit, then it locks the row and finds it notified a moment ago.
    """
    event, created = AlertEvent.objects.get_or_create(
        fingerprint=alert.fingerprint,
        status=alert.status,
        starts_at=alert.starts_at,
        defaults={
            "alertname": alert.alertname[:300],
            "delivery": delivery,
            "first_seen_at": now,
            "last_seen_at": now,
            "notified_at": now,
        },
    )
    if created:
        return event, True
    event = AlertEvent.objects.select_for_update().get(pk=event.pk)
    event.last_seen_at = now
    if event.notified_at > now - timedelta(seconds=settings.WEBHOOK_DEDUP_WINDOW_SECONDS):
        event.duplicates += 1
        event.save(update_fields=["last_seen_at", "duplicates"])
        return event, False
    event.notified_at = now
    event.delivery = delivery
    event.save(update_fields=["last_seen_at", "notified_at", "delivery"])
    return event, True


def start_runs(delivery: AlertDelivery, notification: Notification) -> tuple[list[str], int]:
    """Claims the group's alerts and starts its run when any is new; returns (run ids, new alerts)."""
    from workflows.services import trigger_workflow

    with transaction.atomic():
        now = timezone.now()
        new: list[tuple[Alert, AlertEvent]] = []
        outcomes: list[tuple[str, str]] = []
        # A fixed lock order, so two deliveries with overlapping groups cannot deadlock.
        for alert in sorted(notification.alerts, key=lambda a: (a.fingerprint, a.status, a.starts_at)):
            event, fresh = _claim(alert, delivery, now)
            if fresh:
                new.append((alert, event))
            outcomes.append((alert.status, "triggered" if fresh else "deduplicated"))
        if not new:
            _count(notification.source, outcomes)
            return [], 0
        resolved_runs = _link_resolutions([event for _, event in new if event.status == "resolved"])
        slug = mapping.select_workflow(notification)
        workflow = Workflow.objects.filter(slug=slug).first()
        if workflow is None:
            raise ProcessingError(f"workflow {slug!r} does not exist (sync the workflow definitions)")
        context = mapping.build_context(
            notification,
            received_at=delivery.received_at,
            delivery_id=delivery.pk,
            new_alerts=[alert for alert, _ in new],
            resolves_run_ids=[str(run.id) for run in resolved_runs],
        )
        detail = f"{notification.source} {notification.status}: {context['alert_name']}"
        run, _ = trigger_workflow(workflow, context=context, trigger=TriggerSource.ALERT, trigger_detail=detail[:300])
        for _, event in new:
            event.runs.add(run)
        delivery.runs.add(run)
        _expire_approvals(resolved_runs)
    _count(notification.source, outcomes)
    logger.info(
        "alert delivery %s started run %s of %s",
        delivery.pk,
        run.id,
        workflow.slug,
        extra={"event": "alert.run_started", "run_id": str(run.id), "workflow": workflow.slug},
    )
    return [str(run.id)], len(new)


def _count(source: str, outcomes: list[tuple[str, str]]) -> None:
    for status, outcome in outcomes:
        metrics.record_webhook_alert(source=source, status=status, outcome=outcome)


def _link_resolutions(resolved: list[AlertEvent]) -> list[WorkflowRun]:
    """Links each resolved alert to its firing alert; returns the runs the firing alerts started."""
    runs: dict[str, WorkflowRun] = {}
    for event in resolved:
        firing = AlertEvent.objects.filter(
            fingerprint=event.fingerprint, status="firing", starts_at=event.starts_at
        ).first()
        if firing is None:
            continue
        event.firing_event = firing
        event.save(update_fields=["firing_event"])
        for run in firing.runs.all():
            runs[str(run.id)] = run
    return list(runs.values())


def _expire_approvals(runs: list[WorkflowRun]) -> None:
    """Pending approvals in the firing alert's runs expire ("alert resolved"): the alert they were about is
    over. Each gate's timeout action then applies to its run, as when its time runs out (reject by default)."""
    from approvals.services import expire_open_requests

    for run in runs:
        expired = expire_open_requests(run, reason=RESOLVED_REASON, actor=ACTOR)
        if expired:
            logger.info(
                "%s pending approval(s) of run %s expired: %s",
                expired,
                run.id,
                RESOLVED_REASON,
                extra={"event": "alert.resolved_expired", "run_id": str(run.id), "approvals": expired},
            )


def replay(delivery: AlertDelivery) -> Result:
    """Processes a stored delivery again (admin action); duplicates of notified alerts start nothing."""
    return process(AlertDelivery.objects.get(pk=delivery.pk))
