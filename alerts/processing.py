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

About 490 lines: the path from stored bytes to runs is kept in one module so that every outcome (stored,
rejected, error, processed, deduplicated) is decided in one place and replay follows the same lines.
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
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from alerts import mapping
from alerts.auth import SIGNATURE_HEADERS
from alerts.models import AlertDelivery, AlertEvent
from alerts.payload import ALERTNAME_MAX_LENGTH, Alert, Notification, PayloadError, parse
from config.jsonsafe import bounded, storable_text
from observability import metrics
from workflows.models import TriggerSource, Workflow, WorkflowRun

logger = logging.getLogger("alerts")

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


Key = tuple[str, str, datetime]  # (fingerprint, status, startsAt): one alert state
_BATCH = 500


def _key(alert: Alert) -> Key:
    return (alert.fingerprint, alert.status, alert.starts_at)


def _batches[T](items: list[T]) -> list[list[T]]:
    return [items[i : i + _BATCH] for i in range(0, len(items), _BATCH)]


def _claim(alerts: list[Alert], delivery: AlertDelivery, now: datetime) -> tuple[dict[Key, AlertEvent], list[Key]]:
    """Records the group's alerts; returns every alert's event by key, and the keys that count as new (not
    notified within the window). A few statements per 500 alerts, so a group of thousands answers in time.

    Two deliveries of the same alert at the same instant both try the INSERT; the unique key makes one
    wait for the other's commit, then it locks the row and finds it notified a moment ago. Rows are
    inserted and locked in key order, so two deliveries with overlapping groups cannot deadlock.
    """
    by_key: dict[Key, Alert] = {}
    repeats: dict[Key, int] = {}  # the same alert more than once in this group
    for alert in alerts:
        key = _key(alert)
        if key in by_key:
            repeats[key] = repeats.get(key, 0) + 1
        else:
            by_key[key] = alert
    keys = sorted(by_key)
    table = AlertEvent._meta.db_table
    created: list[int] = []
    with connection.cursor() as cursor:
        for batch in _batches(keys):
            rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, 0)"] * len(batch))
            params: list[Any] = []
            for key in batch:
                alertname = bounded(by_key[key].alertname, ALERTNAME_MAX_LENGTH)
                params.extend([*key, alertname, delivery.pk, now, now, now])
            cursor.execute(
                f"INSERT INTO {table} (fingerprint, status, starts_at, alertname, delivery_id, first_seen_at, "  # noqa: S608 - the model's table
                f"last_seen_at, notified_at, duplicates) VALUES {rows} "
                "ON CONFLICT (fingerprint, status, starts_at) DO NOTHING RETURNING id",
                params,
            )
            created.extend(row[0] for row in cursor.fetchall())
    events = {_event_key(e): e for e in AlertEvent.objects.filter(pk__in=created)}
    fresh = set(events)
    existing = [key for key in keys if key not in events]
    window_start = now - timedelta(seconds=settings.WEBHOOK_DEDUP_WINDOW_SECONDS)
    repeated: dict[int, list[int]] = {}  # by how many more times it was seen: event ids
    renotified: list[int] = []
    for batch in _batches(existing):
        wanted = set(batch)
        found = (
            AlertEvent.objects.select_for_update()
            .filter(fingerprint__in={key[0] for key in batch})
            .order_by("fingerprint", "status", "starts_at")
        )
        for event in found:
            key = _event_key(event)
            if key not in wanted:
                continue
            events[key] = event
            if event.notified_at > window_start:
                repeated.setdefault(1 + repeats.pop(key, 0), []).append(event.pk)
            else:
                renotified.append(event.pk)
                fresh.add(key)
    for key, count in repeats.items():  # repeats of alerts that count as new in this delivery
        repeated.setdefault(count, []).append(events[key].pk)
    for count, ids in repeated.items():
        for id_batch in _batches(ids):
            AlertEvent.objects.filter(pk__in=id_batch).update(last_seen_at=now, duplicates=F("duplicates") + count)
    for id_batch in _batches(renotified):
        AlertEvent.objects.filter(pk__in=id_batch).update(last_seen_at=now, notified_at=now, delivery=delivery)
    return events, sorted(fresh)


def _event_key(event: AlertEvent) -> Key:
    return (event.fingerprint, event.status, event.starts_at)


def start_runs(delivery: AlertDelivery, notification: Notification) -> tuple[list[str], int]:
    """Claims the group's alerts and starts its run when any is new; returns (run ids, new alerts)."""
    from workflows.services import trigger_workflow

    with transaction.atomic():
        now = timezone.now()
        events, fresh = _claim(notification.alerts, delivery, now)
        first: dict[Key, Alert] = {}
        for alert in notification.alerts:
            first.setdefault(_key(alert), alert)
        new = [(first[key], events[key]) for key in fresh]
        # Only the first copy of an alert repeated within the group can count as new.
        counted: set[Key] = set()
        outcomes: list[tuple[str, str]] = []
        for alert in notification.alerts:
            key = _key(alert)
            triggered = key in fresh and key not in counted
            counted.add(key)
            outcomes.append((alert.status, "triggered" if triggered else "deduplicated"))
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
        run.alert_events.add(*(event for _, event in new))
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
    linked: list[AlertEvent] = []
    firing_ids: list[int] = []
    for batch in _batches(resolved):
        firing = {
            (e.fingerprint, e.starts_at): e
            for e in AlertEvent.objects.filter(status="firing", fingerprint__in={e.fingerprint for e in batch})
        }
        for event in batch:
            match = firing.get((event.fingerprint, event.starts_at))
            if match is not None:
                event.firing_event = match
                linked.append(event)
                firing_ids.append(match.pk)
    if linked:
        table = AlertEvent._meta.db_table
        with connection.cursor() as cursor:
            for batch in _batches(linked):
                pairs = ", ".join(["(%s, %s)"] * len(batch))
                cursor.execute(
                    f"UPDATE {table} SET firing_event_id = link.firing FROM (VALUES {pairs}) AS link (id, firing) "  # noqa: S608 - the model's table
                    f"WHERE {table}.id = link.id",
                    [value for event in batch for value in (event.pk, event.firing_event_id)],
                )
    if not firing_ids:
        return []
    # The run ids first: DISTINCT over whole runs would compare their (large) contexts row by row.
    through = AlertEvent.runs.through
    run_ids = set(through.objects.filter(alertevent_id__in=firing_ids).values_list("workflowrun_id", flat=True))
    return list(WorkflowRun.objects.filter(id__in=run_ids).order_by("created_at", "id"))


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
