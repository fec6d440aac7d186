"""Store first, then process: from a stored delivery to deduplicated alerts and the runs they start.

``receive`` (the webhook) commits the raw delivery on its own, byte for byte, then processes it. ``process``
(the webhook, and a replay from the admin) decodes the stored bytes (Content-Encoding, UTF-8, JSON),
validates them, claims each alert's (fingerprint, status, startsAt) row and starts one run for the group
when any alert in it is new within WEBHOOK_DEDUP_WINDOW_SECONDS. Claims and the run are one transaction: if
starting the run fails nothing is claimed, the delivery shows outcome ``error`` and a replay (or the
sender's retry) processes it again.

What a sender gets: 200 with the runs; a 4xx naming the problem for anything the content causes (stored as
``rejected`` with the reason); 503 only when retrying can help: a transient database failure (unreachable,
lock or statement timeout) or the alert workflow missing or disabled; 500 for any other failure on the
service's side. Both are stored as ``error`` and replayable.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from config.jsonsafe import bounded, storable_text
from observability import metrics
from observability.alerts import mapping
from observability.alerts.auth import SIGNATURE_HEADERS
from observability.alerts.payload import ALERTNAME_MAX_LENGTH, Alert, Notification, PayloadError, parse
from observability.models import AlertDelivery, AlertEvent
from workflows.models import TriggerSource, Workflow, WorkflowRun

logger = logging.getLogger("observability.alerts")

RESOLVED_REASON = "alert resolved"
ACTOR = "alert-webhook"
_KEPT_HEADERS = (
    "Content-Type",
    "Content-Encoding",
    "Content-Length",
    "User-Agent",
    "X-Forwarded-For",
    "X-Request-Id",
    "Traceparent",
    "Tracestate",
    *SIGNATURE_HEADERS,
)
CONTENT_TYPE_MAX_LENGTH = 200
HEADER_MAX_LENGTH = 1000
ERROR_MAX_LENGTH = 5000
# Python refuses to turn longer digit strings into integers (sys.get_int_max_str_digits()).
_MAX_INTEGER_DIGITS = 4000


class ProcessingError(Exception):
    """Processing a valid payload failed on the service's side (the sender may retry; so may an operator)."""


class Rejected(Exception):
    """The delivery's content cannot be processed: ``status`` (4xx) and a message naming the problem."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


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
    return {name: bounded(headers[name], HEADER_MAX_LENGTH) for name in names if headers.get(name)}


def is_transient(exc: BaseException) -> bool:
    """A database failure that retrying can cure: unreachable, connection lost, lock or statement timeout."""
    return isinstance(exc, OperationalError | InterfaceError)


def _retryable(exc: BaseException) -> bool:
    """A transient database failure, or the alert workflow missing or disabled: the service cannot take the
    alert now, and the sender's retries deliver it once an operator restores the workflow."""
    from workflows.services import WorkflowDisabled

    return is_transient(exc) or isinstance(exc, ProcessingError | WorkflowDisabled)


def _unavailable(exc: BaseException) -> Result:
    return Result(503, {"detail": f"the database is unavailable, retry later: {type(exc).__name__}"})


def receive(body: bytes, headers: Mapping[str, str]) -> Result:
    """The webhook after authentication: stores the bytes as received, then processes them.

    A database that cannot store the delivery is answered 503 (nothing is kept, the sender retries).
    """
    try:
        delivery = store(body, headers)
    except DatabaseError as exc:
        if not is_transient(exc):
            raise
        logger.warning("alert delivery not stored, database unavailable: %s", exc)
        metrics.record_webhook_alert(source="unknown", status="unknown", outcome="error")
        return _unavailable(exc)
    return process(delivery)


def store(body: bytes, headers: Mapping[str, str]) -> AlertDelivery:
    """Commits the delivery as received, before anything else can fail."""
    kept = kept_headers(headers)
    try:
        text = storable_text(transport_decode(body, kept).decode("utf-8", errors="replace"))
    except Rejected:
        text = ""  # the bytes are kept; processing says why they cannot be read
    with transaction.atomic():
        return AlertDelivery.objects.create(
            received_at=timezone.now(),
            headers=kept,
            content_type=bounded(headers.get("Content-Type") or "", CONTENT_TYPE_MAX_LENGTH),
            raw_body=body,
            body=text,
        )


def transport_decode(body: bytes, headers: Mapping[str, str]) -> bytes:
    """The body with its Content-Encoding (none, identity or gzip) undone; Rejected (415, 400, 413) else."""
    encoding = (headers.get("Content-Encoding") or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise Rejected(415, f"Content-Encoding {shown_header(encoding)} is not supported: send gzip or no encoding")
    limit = settings.WEBHOOK_MAX_BODY_BYTES
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
    try:
        out = inflater.decompress(body, limit + 1)
        complete = inflater.eof
    except zlib.error as exc:
        raise Rejected(400, f"malformed gzip body (Content-Encoding: gzip): {exc}") from None
    if len(out) > limit:
        raise Rejected(413, f"the gzip body decompresses to more than the limit of {limit} bytes")
    if not complete:
        raise Rejected(400, "malformed gzip body (Content-Encoding: gzip): truncated")
    return out


def shown_header(value: str) -> str:
    return repr(bounded(value, 60))


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return not media or media == "application/json" or media.endswith("+json")


def _reject(delivery: AlertDelivery, status: int, message: str, **extra: Any) -> Result:
    message = bounded(message, ERROR_MAX_LENGTH)
    delivery.outcome = AlertDelivery.Outcome.REJECTED
    delivery.http_status = status
    delivery.error = message
    delivery.processed_at = timezone.now()
    delivery.save(update_fields=["outcome", "http_status", "error", "processed_at", "attempts", "source", "status"])
    metrics.record_webhook_alert(source=delivery.source, status=delivery.status or "unknown", outcome="rejected")
    logger.warning("alert delivery %s rejected (%s): %s", delivery.pk, status, message)
    return Result(status, {"detail": message, "deliveryId": delivery.pk, **extra})


def _parse_int(digits: str) -> int | float:
    # Past Python's limit an integer is out of any useful range: it becomes ±Inf (stored as "+Inf"/"-Inf").
    if len(digits.lstrip("-")) > _MAX_INTEGER_DIGITS:
        return float("-inf") if digits.startswith("-") else float("inf")
    return int(digits)


def _body(delivery: AlertDelivery) -> bytes:
    if delivery.raw_body is None:  # stored before raw bodies were kept
        return delivery.body.encode()
    return transport_decode(bytes(delivery.raw_body), delivery.headers)


def decode(delivery: AlertDelivery) -> Notification:
    """The validated notification of a stored delivery; Rejected (4xx) naming the problem otherwise."""
    body = _body(delivery)
    if not _is_json(delivery.content_type):
        raise Rejected(415, f"Content-Type must be application/json, not {shown_header(delivery.content_type)}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "malformed JSON: the body is not valid UTF-8") from None
    try:
        data = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise Rejected(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise Rejected(400, "malformed JSON: nested too deeply") from None
    try:
        return parse(data)
    except PayloadError as exc:
        if isinstance(data, dict) and data.get("version") in ("1", "4"):
            delivery.source = "grafana" if data["version"] == "1" else "alertmanager"
        raise Rejected(422, str(exc), field=exc.field) from None


def process(delivery: AlertDelivery) -> Result:
    """Validates and acts on a stored delivery; records the outcome on it. Never raises.

    200 with the runs; 4xx (``rejected``) for content it cannot act on; 503 (``error``) when the database
    failed transiently, 500 (``error``) for any other failure. A failure to record the outcome leaves the
    delivery as it was (``received`` or its previous outcome), still replayable.
    """
    delivery.attempts += 1
    notification: Notification | None = None
    try:
        try:
            notification = decode(delivery)
        except Rejected as exc:
            return _reject(delivery, exc.status, str(exc), **exc.extra)
        delivery.source = notification.source
        delivery.status = notification.status
        delivery.group_key = notification.group_key
        delivery.alert_count = len(notification.alerts)
        run_ids, fresh = start_runs(delivery, notification)
        delivery.outcome = AlertDelivery.Outcome.PROCESSED if run_ids else AlertDelivery.Outcome.DEDUPLICATED
        delivery.http_status = 200
        delivery.error = ""
        delivery.processed_at = timezone.now()
        delivery.save()
    except Exception as exc:
        return _failed(delivery, notification, exc)
    duplicates = len(notification.alerts) - fresh
    return Result(200, {"workflowRunIds": run_ids, "deliveryId": delivery.pk, "deduplicated": duplicates})


def _failed(delivery: AlertDelivery, notification: Notification | None, exc: Exception) -> Result:
    """Records a failure on the service's side; the claims rolled back with it, so a replay (or the sender's
    retry) starts over."""
    retryable = _retryable(exc)
    status = 503 if retryable else 500
    if retryable:
        logger.warning("alert delivery %s could not be processed (retry later): %s", delivery.pk, exc)
    else:
        logger.exception("alert delivery %s could not be processed", delivery.pk)
    delivery.outcome = AlertDelivery.Outcome.ERROR
    delivery.http_status = status
    delivery.error = bounded(f"{type(exc).__name__}: {exc}", ERROR_MAX_LENGTH)
    delivery.processed_at = timezone.now()
    try:
        delivery.save()
    except DatabaseError:
        logger.warning("the outcome of alert delivery %s could not be recorded", delivery.pk)
    if notification is not None:
        for alert in notification.alerts:
            metrics.record_webhook_alert(source=notification.source, status=alert.status, outcome="error")
    if is_transient(exc):
        return Result(503, {**_unavailable(exc).body, "deliveryId": delivery.pk})
    return Result(status, {"detail": f"processing failed: {delivery.error}", "deliveryId": delivery.pk})


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
            "alertname": bounded(alert.alertname, ALERTNAME_MAX_LENGTH),
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
        run, _ = trigger_workflow(workflow, context=context, trigger=TriggerSource.ALERT, trigger_detail=detail)
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
    """Pending approvals of a firing alert's run expire ("alert resolved") once every alert that started the
    run has resolved: what they were about is over. Each gate's timeout action then applies to its run, as
    when its time runs out (reject by default). While another alert of the run still fires, they stay.

    The run's row is locked before the check, so that of two deliveries resolving a run's last two alerts at
    once, the second to get the lock sees the first's resolution (committed by then) and expires them.
    """
    from approvals.services import expire_open_requests

    for run in runs:
        locked = WorkflowRun.objects.select_for_update().get(id=run.id)
        firing = still_firing(locked)
        if firing:
            logger.info(
                "run %s keeps its pending approvals: %s of the alerts that started it still firing",
                run.id,
                firing,
                extra={"event": "alert.partially_resolved", "run_id": str(run.id), "firing": firing},
            )
            continue
        expired = expire_open_requests(locked, reason=RESOLVED_REASON, actor=ACTOR)
        if expired:
            logger.info(
                "%s pending approval(s) of run %s expired: %s",
                expired,
                run.id,
                RESOLVED_REASON,
                extra={"event": "alert.resolved_expired", "run_id": str(run.id), "approvals": expired},
            )


def still_firing(run: WorkflowRun) -> int:
    """How many of the alerts (fingerprints) that started ``run`` have not resolved."""
    resolved = AlertEvent.objects.filter(
        status="resolved", fingerprint=OuterRef("fingerprint"), starts_at=OuterRef("starts_at")
    )
    return (
        AlertEvent.objects.filter(runs=run, status="firing")
        .exclude(Exists(resolved))
        .values("fingerprint")
        .distinct()
        .count()
    )


def replay(delivery: AlertDelivery) -> Result:
    """Processes a stored delivery again (admin action); duplicates of notified alerts start nothing."""
    return process(AlertDelivery.objects.get(pk=delivery.pk))
