"""Reads Grafana (version "1") and Alertmanager (version "4") webhook payloads, validating as it goes.

Grafana's contact-point payload is Alertmanager's plus a few fields (title, state, message, orgId and, per
alert, dashboardURL, panelURL, silenceURL, values, valueString). Both are read into the same
``Notification``; the first field that breaks the schema raises PayloadError with its path, e.g.
``alerts[0].status must be 'firing' or 'resolved'``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from config.jsonsafe import bounded, storable, storable_text

SOURCES = {"1": "grafana", "4": "alertmanager"}
STATUSES = ("firing", "resolved")
# Go's zero time: Alertmanager's endsAt for an alert with no known end.
_ZERO_YEAR = 1
# The columns alert content is written to (alerts.models.AlertEvent).
FINGERPRINT_MAX_LENGTH = 200
ALERTNAME_MAX_LENGTH = 300
GROUP_KEY_MAX_LENGTH = 1000
# Times that do not fit Python's (and so the service's) range once moved to UTC are clamped to its ends.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


class PayloadError(ValueError):
    """The payload does not fit the schema; ``field`` is the path of the offending value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field


@dataclass
class Alert:
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    fingerprint: str
    generator_url: str = ""
    dashboard_url: str = ""
    panel_url: str = ""
    silence_url: str = ""
    values: dict[str, Any] | None = None
    value_string: str = ""

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    def as_context(self) -> dict[str, Any]:
        """The alert as a run's context keeps it (JSON)."""
        data: dict[str, Any] = {
            "status": self.status,
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": _iso(self.starts_at),
            "endsAt": _iso(self.ends_at) if self.ends_at else "",
            "fingerprint": self.fingerprint,
            "generatorURL": self.generator_url,
        }
        for key, value in (
            ("dashboardURL", self.dashboard_url),
            ("panelURL", self.panel_url),
            ("silenceURL", self.silence_url),
            ("valueString", self.value_string),
        ):
            if value:
                data[key] = value
        if self.values is not None:
            data["values"] = self.values
        return data


@dataclass
class Notification:
    """One notification group as the webhook received it."""

    version: str
    source: str
    status: str
    alerts: list[Alert]
    receiver: str = ""
    group_key: str = ""
    group_labels: dict[str, str] = field(default_factory=dict)
    common_labels: dict[str, str] = field(default_factory=dict)
    common_annotations: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    truncated_alerts: int = 0
    title: str = ""
    state: str = ""
    message: str = ""
    org_id: int | None = None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _clean(text: str) -> str:
    # PostgreSQL stores no NUL character (nor lone surrogates) in text or jsonb.
    return storable_text(text)


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters."""
    return bounded(repr(value), limit)


class _Reader:
    """Typed access to one JSON object, naming the path of anything wrong."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise PayloadError(path or "body", f"must be a JSON object, not {_kind(data)}")
        self.data = data
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def string(self, key: str, *, required: bool = False, default: str = "") -> str:
        value = self.data.get(key)
        if value is None:
            if required:
                raise PayloadError(self.where(key), "is required")
            return default
        if not isinstance(value, str):
            raise PayloadError(self.where(key), f"must be a string, not {_kind(value)}")
        return _clean(value)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, required=True)
        if value not in choices:
            allowed = " or ".join(f"'{c}'" for c in choices)
            raise PayloadError(self.where(key), f"must be {allowed}, not {shown(value)}")
        return value

    def integer(self, key: str, *, minimum: int = 0) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise PayloadError(self.where(key), f"must be an integer, not {_kind(value)}")
        if value < minimum:
            raise PayloadError(self.where(key), f"must be at least {minimum}")
        return value

    def string_map(self, key: str) -> dict[str, str]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise PayloadError(self.where(key), f"must be an object, not {_kind(value)}")
        out: dict[str, str] = {}
        for name, item in value.items():
            if not isinstance(item, str):
                raise PayloadError(f"{self.where(key)}.{_clean(name)[:100]}", f"must be a string, not {_kind(item)}")
            out[_clean(name)] = _clean(item)
        return out

    def time(self, key: str, *, required: bool = False) -> datetime | None:
        raw = self.string(key, required=required)
        if not raw:
            if required:
                raise PayloadError(self.where(key), "is required")
            return None
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise PayloadError(self.where(key), f"must be an RFC 3339 time, not {shown(raw)}") from None
        if moment.tzinfo is None:
            raise PayloadError(self.where(key), f"must carry a time zone offset, not {shown(raw)}")
        if moment.year == _ZERO_YEAR:
            return None
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            # e.g. 9999-12-31T23:00:00-05:00, past the last representable instant in UTC
            return LATEST if moment.year > 5000 else EARLIEST


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def computed_fingerprint(labels: dict[str, str]) -> str:
    """A stable fingerprint from the labels, for senders that leave ``fingerprint`` out."""
    canonical = json.dumps(labels, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def bounded_fingerprint(fingerprint: str) -> str:
    """The fingerprint as sent, or, past FINGERPRINT_MAX_LENGTH, its start, a marker and a hash of the whole:
    two long fingerprints that share a start stay two alerts."""
    if len(fingerprint) <= FINGERPRINT_MAX_LENGTH:
        return fingerprint
    digest = hashlib.sha256(fingerprint.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return bounded(fingerprint, FINGERPRINT_MAX_LENGTH - len(digest) - 1) + "#" + digest


def _read_alert(data: Any, path: str) -> Alert:
    r = _Reader(data, path)
    status = r.choice("status", STATUSES)
    labels = r.string_map("labels")
    starts_at = r.time("startsAt", required=True)
    if starts_at is None:  # Go's zero time: no start time at all
        raise PayloadError(r.where("startsAt"), "must be a real time, not Go's zero time (year 1)")
    values = r.data.get("values")
    if values is not None and not isinstance(values, dict):
        raise PayloadError(r.where("values"), f"must be an object or null, not {_kind(values)}")
    fingerprint = bounded_fingerprint(r.string("fingerprint") or computed_fingerprint(labels))
    return Alert(
        status=status,
        labels=labels,
        annotations=r.string_map("annotations"),
        starts_at=starts_at,
        ends_at=r.time("endsAt"),
        fingerprint=fingerprint,
        generator_url=r.string("generatorURL"),
        dashboard_url=r.string("dashboardURL"),
        panel_url=r.string("panelURL"),
        silence_url=r.string("silenceURL"),
        values=None if values is None else storable(values),
        value_string=r.string("valueString"),
    )


def parse(data: Any) -> Notification:
    """Validates a decoded JSON payload and returns it as a Notification; raises PayloadError."""
    r = _Reader(data, "")
    version = r.string("version", required=True)
    if version not in SOURCES:
        raise PayloadError("version", f"must be '1' (Grafana) or '4' (Alertmanager), not {shown(version)}")
    status = r.choice("status", STATUSES)
    raw_alerts = r.data.get("alerts")
    if not isinstance(raw_alerts, list):
        raise PayloadError("alerts", f"must be an array, not {_kind(raw_alerts)}")
    if not raw_alerts:
        raise PayloadError("alerts", "must contain at least one alert")
    alerts = [_read_alert(item, f"alerts[{i}]") for i, item in enumerate(raw_alerts)]
    org_id = r.integer("orgId")
    return Notification(
        version=version,
        source=SOURCES[version],
        status=status,
        alerts=alerts,
        receiver=r.string("receiver"),
        group_key=bounded(r.string("groupKey"), GROUP_KEY_MAX_LENGTH),
        group_labels=r.string_map("groupLabels"),
        common_labels=r.string_map("commonLabels"),
        common_annotations=r.string_map("commonAnnotations"),
        external_url=r.string("externalURL"),
        truncated_alerts=r.integer("truncatedAlerts") or 0,
        title=r.string("title"),
        state=r.string("state"),
        message=r.string("message"),
        org_id=org_id,
    )
