"""From a notification group to the context of the run that tells people about it."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from urllib.parse import quote, urljoin

from django.conf import settings

from alerts.payload import Alert, Notification
from config.jsonsafe import storable

logger = logging.getLogger("alerts")

# Highest first: a group's severity is that of its most severe alert.
SEVERITY_RANK = ("critical", "error", "high", "warning", "medium", "low", "info")
WORKFLOW_LABEL = "workflow"


def severity(notification: Notification) -> str:
    """The severity label (the most severe in the group), else critical while firing, else warning."""
    common = notification.common_labels.get("severity", "").strip().lower()
    if common:
        return common
    found = {a.labels["severity"].strip().lower() for a in notification.alerts if a.labels.get("severity")}
    if found:
        ranked = [s for s in SEVERITY_RANK if s in found]
        return ranked[0] if ranked else sorted(found)[0]
    firing = notification.status == "firing" or notification.state == "alerting"
    return "critical" if firing else "warning"


def alert_names(notification: Notification) -> list[str]:
    names: list[str] = []
    for alert in notification.alerts:
        if alert.alertname and alert.alertname not in names:
            names.append(alert.alertname)
    return names


def alert_name(notification: Notification) -> str:
    common = notification.common_labels.get("alertname") or notification.group_labels.get("alertname")
    if common:
        return common
    names = alert_names(notification)
    if not names:
        return notification.title or "alert"
    shown = ", ".join(names[:3])
    return shown if len(names) <= 3 else f"{shown} and {len(names) - 3} more"


def _annotation(notification: Notification, key: str) -> str:
    if notification.common_annotations.get(key):
        return notification.common_annotations[key]
    return next((a.annotations[key] for a in notification.alerts if a.annotations.get(key)), "")


def runbook_url(notification: Notification) -> str:
    """The runbook_url annotation, else RUNBOOK_URL_MAP by alert name; relative paths join RUNBOOK_BASE_URL."""
    url = _annotation(notification, "runbook_url")
    if not url:
        url = next(
            (settings.RUNBOOK_URL_MAP[n] for n in alert_names(notification) if n in settings.RUNBOOK_URL_MAP), ""
        )
    if url and "://" not in url and settings.RUNBOOK_BASE_URL:
        url = urljoin(settings.RUNBOOK_BASE_URL + "/", url.lstrip("/"))
    return url


def dashboard_url(notification: Notification) -> str:
    for alert in notification.alerts:
        if alert.dashboard_url:
            return alert.dashboard_url
    return _annotation(notification, "dashboard_url")


def silence_url(notification: Notification) -> str:
    """Grafana's silence link; for Alertmanager, its new-silence page filtered on the group's labels."""
    for alert in notification.alerts:
        if alert.silence_url:
            return alert.silence_url
    labels = notification.group_labels or notification.common_labels
    if notification.source == "alertmanager" and notification.external_url and labels:
        matchers = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return f"{notification.external_url.rstrip('/')}/#/silences/new?filter={quote('{' + matchers + '}')}"
    return ""


def summary(notification: Notification) -> str:
    return _annotation(notification, "summary") or notification.title or alert_name(notification)


def message(notification: Notification) -> str:
    return _annotation(notification, "description") or summary(notification)


def select_workflow(notification: Notification) -> str:
    """ALERT_WORKFLOW_DEFAULT, unless every alert carries the same allowlisted ``workflow`` label.

    A value outside ALERT_WORKFLOW_ALLOWLIST is ignored: labels often name the workflow an alert is
    about, and an alert must not be able to start arbitrary workflows.
    """
    values = {a.labels.get(WORKFLOW_LABEL, "") for a in notification.alerts}
    if len(values) == 1:
        (value,) = values
        if value and value in settings.ALERT_WORKFLOW_ALLOWLIST:
            return value
        if value:
            logger.info("workflow label %r is not in ALERT_WORKFLOW_ALLOWLIST; using the default", value)
    return settings.ALERT_WORKFLOW_DEFAULT


def build_context(
    notification: Notification,
    *,
    received_at: datetime,
    delivery_id: int,
    new_alerts: list[Alert],
    resolves_run_ids: list[str],
) -> dict[str, Any]:
    """The run context: what the notifier says and links to, plus the group as received (made storable)."""
    return storable(
        {
            "source": notification.source,
            "status": notification.status,
            "resolved": notification.status == "resolved",
            "severity": severity(notification),
            "alert_name": alert_name(notification),
            "summary": summary(notification),
            "message": message(notification),
            "title": notification.title,
            "dashboard_url": dashboard_url(notification),
            "runbook_url": runbook_url(notification),
            "silence_url": silence_url(notification),
            "source_url": next((a.generator_url for a in notification.alerts if a.generator_url), ""),
            "labels": notification.common_labels,
            "group_labels": notification.group_labels,
            "group_key": notification.group_key,
            "external_url": notification.external_url,
            "receiver": notification.receiver,
            "alert_count": len(notification.alerts),
            "new_alert_count": len(new_alerts),
            "truncated_alerts": notification.truncated_alerts,
            "alerts": [a.as_context() for a in notification.alerts],
            "timestamp": received_at.isoformat(),
            "delivery_id": delivery_id,
            "resolves_run_ids": resolves_run_ids,
        }
    )
