"""How the console writes statuses, triggers and durations: one wording for every page that shows them.

The enums stay as they are in the database, the API and the metrics (``WAITING_APPROVAL``, ``api``); operators
read the labels below. A badge carries its status as text and in ``data-status``, never by colour alone.
"""

from __future__ import annotations

import json
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString

# Runs, steps, attempts and approval requests share one vocabulary where the words mean the same thing.
STATUS_LABELS = {
    "PENDING": "Pending",
    "READY": "Queued",
    "RUNNING": "Running",
    "WAITING_APPROVAL": "Waiting for approval",
    "SUCCESS": "Succeeded",
    "FAILED": "Failed",
    "TIMED_OUT": "Timed out",
    "LOST": "Lost",
    "CANCELLED": "Cancelled",
    "REJECTED": "Rejected",
    "APPROVED": "Approved",
    "EXPIRED": "Expired",
}
# A step that is PENDING waits for the steps it depends on, which is not what "Pending" says about a run.
STEP_STATUS_LABELS = {**STATUS_LABELS, "PENDING": "Waiting for upstream"}

TRIGGER_LABELS = {"api": "API", "alert": "Alert", "admin": "Console", "rerun": "Re-run"}

JSON_PREVIEW_CHARS = 20_000


def status_label(status: str, *, step: bool = False) -> str:
    labels = STEP_STATUS_LABELS if step else STATUS_LABELS
    return labels.get(status, status.replace("_", " ").capitalize())


def trigger_label(trigger: str) -> str:
    return TRIGGER_LABELS.get(trigger, trigger)


def status_badge(status: str, *, step: bool = False) -> SafeString:
    return format_html(
        '<span class="run-status run-status-{}" data-status="{}">{}</span>',
        status.lower(),
        status,
        status_label(status, step=step),
    )


def format_duration(seconds: float | None) -> str:
    """A duration at the precision it deserves: 12 ms, 3.4 s, 5m 12s, 2h 5m, 3d 4h; "—" when unknown."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"


def format_wait(seconds: float) -> str:
    """How long someone or something has waited, in whole seconds under a minute (never "0 minutes")."""
    if seconds < 60:
        return f"{int(seconds)} s"
    return format_duration(seconds)


def pretty_json(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    if len(text) > JSON_PREVIEW_CHARS:
        return text[:JSON_PREVIEW_CHARS] + f"\n… ({len(text) - JSON_PREVIEW_CHARS} more characters)"
    return text
