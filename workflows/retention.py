"""Data retention: the maintenance pass deletes what is old enough to go, a bounded slice at a time.

The kinds, each with its own setting (0 keeps that kind forever):

- ``task_results``: django_tasks_db queue rows finished (SUCCESSFUL or FAILED) more than
  TASK_RESULT_RETENTION_HOURS ago, and RUNNING rows started that long ago, which a dead worker left behind:
  the task row is only a queue message, our run and step rows are the truth. READY rows are never touched.
  The reaper marks a dead worker's RUNNING row FAILED as soon as it reaps the step that worker held (and the
  stale-READY sweep the row of a task whose worker died before claiming its step), so what reaches this rule
  is only what neither saw. Keep the retention far above the longest task (a chain of steps runs inline in
  one task).
- what the apps above add with ``add_kinds`` (before ``runs``): the alert webhook's ``alert_events`` and
  ``alert_deliveries``, older than ALERT_RETENTION_DAYS (see alerts.retention).
- ``runs``: terminal runs finished more than RUN_RETENTION_DAYS ago (default 0: kept forever), with their
  steps, attempts, transitions and approvals (all CASCADE). A rerun of a deleted run keeps its own snapshot
  and loses only the ``rerun_of`` link (SET_NULL).

Rows go in batches: each transaction selects at most ``batch`` ids with ``FOR UPDATE SKIP LOCKED`` and
deletes exactly those, so workers pruning at the same moment take disjoint slices instead of queueing up.
One call stops after ``max_batches`` batches per kind, which keeps a maintenance pass short; a pass that hit
that cap leaves the next one due at once, so a backlog drains in short slices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from time import monotonic

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.tasks import TaskResultStatus
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from workflows.models import TERMINAL_RUN_STATUSES, WorkflowRun

logger = logging.getLogger("workflows.retention")

# The kinds a pass deletes, in its order: the core's task results and runs, the apps' kinds in between.
KINDS: tuple[str, ...] = ("task_results", "runs")
_plugged: list[Callable[[datetime], dict[str, QuerySet | None]]] = []
BATCH = 1000
MAX_BATCHES = 10

# monotonic() when this process last started a pass (see prune_if_due); None: the next one is due at once.
_last_pruned: float | None = None


def prune(
    now: datetime | None = None, *, batch: int = BATCH, dry_run: bool = False, max_batches: int | None = MAX_BATCHES
) -> dict[str, int]:
    """Deletes what the retention settings let go; returns the rows deleted per kind (dry_run: would delete).

    ``max_batches`` bounds the batches per kind in this call (None: until nothing is left).
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    now = now or timezone.now()
    counts = {}
    for kind, queryset in _candidates(now).items():
        counts[kind] = 0 if queryset is None else _delete(queryset, batch=batch, max_batches=max_batches, dry=dry_run)
    if not dry_run and any(counts.values()):
        logger.info(
            "pruned %s",
            ", ".join(f"{n} {kind}" for kind, n in counts.items() if n),
            extra={"event": "retention.pruned", **counts},
        )
    return counts


def prune_if_due() -> dict[str, int]:
    """``prune()`` at most once per RETENTION_INTERVAL_SECONDS in this process; zeros when not due.

    The maintenance pass calls this every RUNNER_REAPER_INTERVAL, so the check must cost nothing.
    """
    global _last_pruned
    started = monotonic()
    if _last_pruned is not None and started - _last_pruned < settings.RETENTION_INTERVAL_SECONDS:
        return dict.fromkeys(KINDS, 0)
    # Taken before the pass, so a pass that fails is not retried on every maintenance tick.
    _last_pruned = started
    counts = prune(batch=BATCH, max_batches=MAX_BATCHES)
    if any(n >= BATCH * MAX_BATCHES for n in counts.values()):
        _last_pruned = None  # stopped at the cap: more is waiting
    return counts


def add_kinds(kinds: tuple[str, ...], candidates: Callable[[datetime], dict[str, QuerySet | None]]) -> None:
    """Plugs an app's rows into the pass: ``candidates(now)`` gives, per kind, what may go (None: kept forever)."""
    global KINDS
    if candidates in _plugged:
        return
    _plugged.append(candidates)
    KINDS = (*KINDS[:-1], *kinds, KINDS[-1])


def _candidates(now: datetime) -> dict[str, QuerySet | None]:
    """Per kind, the rows old enough to go (None: that kind is kept forever)."""
    task_hours = settings.TASK_RESULT_RETENTION_HOURS
    run_days = settings.RUN_RETENTION_DAYS
    found = {"task_results": _task_results(now - timedelta(hours=task_hours)) if task_hours else None}
    for candidates in _plugged:
        found.update(candidates(now))
    found["runs"] = _runs(now - timedelta(days=run_days)) if run_days else None
    return found


def _task_results(cutoff: datetime) -> QuerySet:
    finished = Q(status__in=[TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED], finished_at__lt=cutoff)
    orphaned = Q(status=TaskResultStatus.RUNNING, started_at__lt=cutoff)
    return DBTaskResult.objects.filter(finished | orphaned)


def _runs(cutoff: datetime) -> QuerySet:
    return WorkflowRun.objects.filter(status__in=TERMINAL_RUN_STATUSES, finished_at__lt=cutoff)


def _delete(queryset: QuerySet, *, batch: int, max_batches: int | None, dry: bool) -> int:
    """Deletes the queryset's rows ``batch`` ids per transaction; returns how many of its model went."""
    queryset = queryset.order_by()  # no sort: the first ``batch`` matches are as good as any
    if dry:
        total = queryset.count()
        return total if max_batches is None else min(total, batch * max_batches)
    model = queryset.model
    deleted = batches = 0
    while max_batches is None or batches < max_batches:
        with transaction.atomic():
            ids = list(queryset.select_for_update(skip_locked=True, of=("self",)).values_list("pk", flat=True)[:batch])
            if ids:
                _, per_model = model._base_manager.filter(pk__in=ids).delete()
                deleted += per_model.get(model._meta.label, 0)
        batches += 1
        if len(ids) < batch:
            break
    return deleted
