"""Deep links from the console into Grafana: a run's trace, one attempt's span, its logs, its dashboard.

Every builder returns ``None`` when GRAFANA_URL is unset, so templates can hide a link instead of
rendering a broken one. Explore URLs use the ``panes`` format of current Grafana
(``/explore?schemaVersion=1&panes=<json>&orgId=<n>``): one pane with the datasource, its queries, the time
range in epoch milliseconds and, for a span, ``panelsState.trace.spanId`` so that span is selected.
The datasource uids are the ones deploy/'s provisioning gives the datasources.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.conf import settings
from django.utils import timezone

from observability.otel import DEFAULT_SERVICE_NAME

if TYPE_CHECKING:
    from agents.models import AgentRun
    from workflows.models import WorkflowRun

# Tempo indexes a trace under the times of its spans; the run's own times plus a margin find it
# without making Tempo search a whole day.
RANGE_BEFORE = timedelta(minutes=5)
RANGE_AFTER = timedelta(minutes=10)

PANE_ID = "run"


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    by_workflow: bool  # has a `workflow` variable (URL parameter var-workflow)


DASHBOARDS = (
    Dashboard("workflow-overview", "Workflow overview", True),
    Dashboard("agent-performance", "Agent performance", True),
    Dashboard("cost-tracking", "Cost tracking", True),
    Dashboard("system-health", "System health", False),
)


def enabled() -> bool:
    return bool(settings.GRAFANA_URL)


def _base() -> str:
    return str(settings.GRAFANA_URL).rstrip("/")


def service_name() -> str:
    return os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME


def _ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def time_range(start: datetime, end: datetime | None) -> dict[str, str]:
    """Explore's absolute range around [start, end] (end defaults to now, for a run in flight)."""
    end = end or timezone.now()
    return {"from": _ms(start - RANGE_BEFORE), "to": _ms(end + RANGE_AFTER)}


def explore_url(pane: dict[str, Any]) -> str | None:
    if not enabled():
        return None
    panes = json.dumps({PANE_ID: pane}, separators=(",", ":"))
    query = urlencode({"schemaVersion": 1, "panes": panes, "orgId": settings.GRAFANA_ORG_ID})
    return f"{_base()}/explore?{query}"


def trace_url(trace_id: str, start: datetime, end: datetime | None, *, span_id: str = "") -> str | None:
    """The trace in Explore (Tempo, looked up by id); with ``span_id`` that span is selected."""
    if not trace_id:
        return None
    uid = settings.GRAFANA_TEMPO_UID
    pane: dict[str, Any] = {
        "datasource": uid,
        "queries": [
            {"refId": "A", "datasource": {"type": "tempo", "uid": uid}, "queryType": "traceql", "query": trace_id}
        ],
        "range": time_range(start, end),
    }
    if span_id:
        pane["panelsState"] = {"trace": {"spanId": span_id}}
    return explore_url(pane)


def logs_query(trace_id: str) -> str:
    # trace_id is structured metadata on the OTLP log records Loki stores, as in the Tempo datasource's
    # trace-to-logs query in deploy/grafana/provisioning.
    return f'{{service_name="{service_name()}"}} | trace_id="{trace_id}"'


def logs_url(trace_id: str, start: datetime, end: datetime | None) -> str | None:
    """The logs of every process that worked on the trace, in Explore (Loki)."""
    if not trace_id:
        return None
    uid = settings.GRAFANA_LOKI_UID
    pane = {
        "datasource": uid,
        "queries": [
            {
                "refId": "A",
                "datasource": {"type": "loki", "uid": uid},
                "expr": logs_query(trace_id),
                "queryType": "range",
            }
        ],
        "range": time_range(start, end),
    }
    return explore_url(pane)


def dashboard_url(
    uid: str, *, workflow: str = "", start: datetime | None = None, end: datetime | None = None
) -> str | None:
    """A dashboard, filtered to one workflow when given, over the run's time range when given."""
    if not enabled():
        return None
    params: dict[str, Any] = {"orgId": settings.GRAFANA_ORG_ID}
    if workflow:
        params["var-workflow"] = workflow
    if start is not None:
        window = time_range(start, end)
        params["from"], params["to"] = window["from"], window["to"]
    return f"{_base()}/d/{uid}?{urlencode(params)}"


def workflow_dashboard_url(workflow: str, start: datetime | None = None, end: datetime | None = None) -> str | None:
    return dashboard_url(settings.GRAFANA_WORKFLOW_DASHBOARD_UID, workflow=workflow, start=start, end=end)


def dashboards(workflow: str = "") -> list[dict[str, str]]:
    """The provisioned dashboards as (title, url), filtered to ``workflow`` where they can be; [] without Grafana."""
    if not enabled():
        return []
    return [
        {"title": d.title, "url": dashboard_url(d.uid, workflow=workflow if d.by_workflow else "") or ""}
        for d in DASHBOARDS
    ]


def run_start(run: WorkflowRun) -> datetime:
    return run.started_at or run.created_at


def run_trace_url(run: WorkflowRun) -> str | None:
    return trace_url(run.trace_id, run_start(run), run.finished_at)


def attempt_span_url(run: WorkflowRun, attempt: AgentRun) -> str | None:
    """The run's trace with this attempt's ``agent.execute`` span selected; None before telemetry set its id."""
    if not attempt.span_id:
        return None
    return trace_url(run.trace_id, run_start(run), run.finished_at, span_id=attempt.span_id)


def run_links(run: WorkflowRun) -> dict[str, str]:
    """The run's Grafana links by name (trace, logs, dashboard); empty without GRAFANA_URL or a trace id."""
    start, end = run_start(run), run.finished_at
    links = {
        "trace": trace_url(run.trace_id, start, end),
        "logs": logs_url(run.trace_id, start, end),
        "dashboard": workflow_dashboard_url(run.workflow.slug, start, end),
    }
    return {name: url for name, url in links.items() if url}
