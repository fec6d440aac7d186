"""The metric catalogue of DESIGN.md: instruments, their attributes and histogram buckets.

Names never end in ``.total``: the Prometheus exporters (Python's and the Collector's) add ``_total`` to
counters and the unit suffix (``_seconds``) themselves, which gives the Prometheus names in the catalogue.
Attributes are bounded vocabularies (workflow slugs, statuses, agent types, error class names); run ids,
trace ids and free text never become attributes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

logger = logging.getLogger("observability")

METER_NAME = "commandcenter"
meter = metrics.get_meter(METER_NAME)

# Bucket boundaries, in seconds.
WORKFLOW_DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0)
AGENT_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
APPROVAL_WAIT_BUCKETS = (10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0, 86400.0, 259200.0, 604800.0)

ACTIVE_STATUSES = ("PENDING", "RUNNING", "WAITING_APPROVAL")

workflow_runs = meter.create_counter("workflow.runs", unit="{run}", description="Runs that reached a terminal status")
workflow_duration = meter.create_histogram(
    "workflow.duration", unit="s", description="Time from the start of a run to its terminal status"
)
approval_wait_time = meter.create_histogram(
    "workflow.approval.wait_time", unit="s", description="Time from an approval request to its decision"
)
agent_runs = meter.create_counter("agent.runs", unit="{run}", description="Agent attempts, by outcome")
agent_duration = meter.create_histogram("agent.duration", unit="s", description="Duration of one agent attempt")
agent_errors = meter.create_counter("agent.errors", unit="{error}", description="Agent attempts that failed")
agent_retries = meter.create_counter("agent.retries", unit="{retry}", description="Retries scheduled for a step")
webhook_alerts = meter.create_counter(
    "webhook.alerts", unit="{alert}", description="Alerts received on the alert webhook, by outcome"
)


# Process resources of every process that sets telemetry up (gunicorn workers, task workers, commands), through
# OpenTelemetry's system-metrics instrumentation limited to what the System Health dashboard and the
# HighMemoryUsage alert read. Under the Prometheus names the exporters give them (Python's and the Collector's):
# process_memory_usage_bytes (resident memory), process_cpu_time_seconds_total{type="user"|"system"} and
# process_open_file_descriptor_count; job and instance come from service.name and service.instance.id (host:pid).
PROCESS_METRICS: dict[str, list[str] | None] = {
    "process.memory.usage": None,
    "process.cpu.time": ["user", "system"],
    "process.open_file_descriptor.count": None,
}


def instrument_process(meter_provider: Any) -> None:
    """Reports this process's memory, CPU time and open file descriptors through ``meter_provider``.

    The instrumentor is a singleton that measures the process it was created in, so a process forked from one
    that was already instrumented starts it again for itself.
    """
    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

    instrumentor = SystemMetricsInstrumentor(config=PROCESS_METRICS)
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(meter_provider=meter_provider)


def views() -> list[Any]:
    """Views that set the histogram buckets (in seconds)."""
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    return [
        View(
            instrument_name="workflow.duration",
            meter_name=METER_NAME,
            aggregation=ExplicitBucketHistogramAggregation(WORKFLOW_DURATION_BUCKETS),
        ),
        View(
            instrument_name="agent.duration",
            meter_name=METER_NAME,
            aggregation=ExplicitBucketHistogramAggregation(AGENT_DURATION_BUCKETS),
        ),
        View(
            instrument_name="workflow.approval.wait_time",
            meter_name=METER_NAME,
            aggregation=ExplicitBucketHistogramAggregation(APPROVAL_WAIT_BUCKETS),
        ),
    ]


# Series this process has reported, so a count that drops to nothing is reported as 0, not dropped.
_seen_active: set[tuple[str, str]] = set()


def _observe_active(options: CallbackOptions) -> Iterable[Observation]:
    """Active runs by workflow and status, counted in the database (right with any number of processes)."""
    from django.apps import apps

    if not apps.ready:  # a collection before Django finished loading (gunicorn: right after the fork)
        return []
    from django.db import DatabaseError, connection
    from django.db.models import Count

    from workflows.models import WorkflowRun

    try:
        rows = list(
            WorkflowRun.objects.filter(status__in=ACTIVE_STATUSES)
            .values_list("workflow__slug", "status")
            .annotate(n=Count("id"))
            .order_by()
        )
    except DatabaseError as exc:
        logger.warning("cannot count active runs: %s", exc)
        return []
    finally:
        # Collection runs on the exporter's thread, or inside a /metrics request: do not keep a
        # connection open on a thread that Django's request cycle never cleans up.
        if not connection.in_atomic_block:
            connection.close()
    counts = {(slug, status): n for slug, status, n in rows}
    _seen_active.update(counts)
    return [Observation(counts.get(key, 0), {"workflow": key[0], "status": key[1]}) for key in sorted(_seen_active)]


workflows_active = meter.create_observable_gauge(
    "workflows.active",
    callbacks=[_observe_active],
    unit="{run}",
    description="Runs that are pending, running or waiting for approval, counted from the database",
)


# --- Recording ------------------------------------------------------------------------------------------


def record_run_finished(*, workflow: str, status: str, trigger: str, duration: float, context: Any = None) -> None:
    workflow_runs.add(1, {"workflow": workflow, "status": status, "trigger": trigger})
    workflow_duration.record(max(duration, 0.0), {"workflow": workflow, "status": status}, context=context)


def record_attempt(
    *,
    workflow: str,
    agent_type: str,
    action: str,
    status: str,
    error_type: str,
    duration: float | None,
    failed: bool,
    context: Any = None,
) -> None:
    agent_runs.add(1, {"agent_type": agent_type, "status": status, "workflow": workflow})
    if duration is not None:
        agent_duration.record(
            max(duration, 0.0), {"agent_type": agent_type, "action": action, "status": status}, context=context
        )
    if failed:
        agent_errors.add(1, {"agent_type": agent_type, "error_type": error_type or status})


def record_retry(*, agent_type: str, reason: str) -> None:
    agent_retries.add(1, {"agent_type": agent_type, "reason": reason})


def record_approval_wait(*, workflow: str, node: str, decision: str, seconds: float, context: Any = None) -> None:
    approval_wait_time.record(
        max(seconds, 0.0), {"workflow": workflow, "node": node, "decision": decision}, context=context
    )


def record_webhook_alert(*, source: str, status: str, outcome: str) -> None:
    """One alert received on the alert webhook.

    ``source``: ``grafana`` or ``alertmanager``; ``status``: the alert's ``firing``/``resolved``;
    ``outcome``: what became of it, from a small fixed set (e.g. ``triggered``, ``duplicate``,
    ``ignored``, ``rejected``). Never an alert name or label value.
    """
    webhook_alerts.add(1, {"source": source, "status": status, "outcome": outcome})
