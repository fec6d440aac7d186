"""Wakes idle workers as soon as a task is enqueued, instead of waiting for their next poll."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.dispatch import receiver
from django.tasks.signals import task_enqueued

NOTIFY_CHANNEL = "commandcenter_tasks"


@receiver(task_enqueued)
def notify_workers(sender: Any, task_result: Any, **kwargs: Any) -> None:
    # NOTIFY inside a transaction is delivered at commit, together with the task row it announces.
    if connection.vendor == "postgresql" and sender.__name__ == "DatabaseBackend":
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {NOTIFY_CHANNEL}")
