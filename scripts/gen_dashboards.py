#!/usr/bin/env python3
"""Generate deploy/'s derived observability files from one place.

Writes:
- deploy/grafana/dashboards/*.json: the four dashboards (built with grafana-foundation-sdk);
- deploy/prometheus/rules/slo.yml: SLO recording rules and multi-window, multi-burn-rate alerts;
- deploy/grafana/provisioning/alerting/rules.yaml: Grafana-managed alert rules that evaluate exactly the
  expressions of the Prometheus alerts (deploy/prometheus/rules/alerts.yml and slo.yml), so that Grafana
  notifies the service's webhook from the same definitions Prometheus shows and promtool tests.

Usage:
    python scripts/gen_dashboards.py          # rewrite the files
    python scripts/gen_dashboards.py --check  # exit 1 and name the files that are not current

Dashboard queries use only the metric catalogue (DESIGN.md), django-prometheus, the Python client's process
metrics, Prometheus' own series and the recording rules defined in deploy/prometheus/rules/.

About 1,200 lines: each dashboard panel and rule is declared here once, next to the others it must agree
with; splitting it would split the one place where a metric's name and its queries are checked together.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import StackingMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    DataSourceRef,
    DataTransformerConfig,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARD_DIR = DEPLOY / "grafana" / "dashboards"
RULES_DIR = DEPLOY / "prometheus" / "rules"
GRAFANA_ALERT_RULES = DEPLOY / "grafana" / "provisioning" / "alerting" / "rules.yaml"

PROMETHEUS_UID = "prometheus"
PROM = DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
FOLDER = "CommandCenter"
TAGS = ["commandcenter"]

# Run list in the operator console; the `app_url` dashboard variable holds where the service is reachable.
RUN_LIST = "${app_url}/admin/workflows/workflowrun/"

# Agent attempts that count as failures, and the finished ones (CANCELLED is an operator decision).
AGENT_FAILED = 'status=~"FAILED|TIMED_OUT|LOST"'
AGENT_FINISHED = 'status=~"SUCCESS|FAILED|TIMED_OUT|LOST"'
# Probe and scrape views are not user traffic.
NOT_PROBES = 'view!~"healthz|readyz|prometheus-django-metrics"'
# Responses that mean the database is unreachable (/readyz, and config/middleware.py's 503 for a view whose
# connection failed); the alert webhook's 503 means a delivery could not be processed, for any reason.
DB_UNAVAILABLE = 'django_http_responses_total_by_status_view_method_total{status="503", view!="grafana-webhook"}'


# --- Dashboard building blocks -------------------------------------------------------------------------


def q(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, exemplar: bool = False):
    target = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(PROM)
    if legend:
        target = target.legend_format(legend)
    if instant:
        target = target.instant()
    if exemplar:
        target = target.exemplar(True)
    return target


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def link(title: str, url: str) -> dash.DashboardLink:
    return dash.DashboardLink(title).type(DashboardLinkType.LINK).url(url).target_blank(True)


class Panels:
    """Hands out stable panel ids so that links with ?viewPanel=N keep working across regenerations."""

    def __init__(self) -> None:
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> dash.Row:
        return dash.Row(title).id(self._id())

    def timeseries(
        self,
        title: str,
        description: str,
        targets: list,
        unit: str,
        *,
        width: int = 12,
        links: list | None = None,
        stacked: bool = False,
    ) -> timeseries.Panel:
        panel = (
            timeseries.Panel()
            .id(self._id())
            .title(title)
            .description(description)
            .datasource(PROM)
            .targets(targets)
            .unit(unit)
            .height(8)
            .span(width)
            .fill_opacity(10)
            .line_width(1)
        )
        if stacked:
            panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(40)
        if links:
            panel = panel.data_links(links)
        return panel

    def stat(
        self,
        title: str,
        description: str,
        targets: list,
        unit: str,
        *,
        width: int = 6,
        steps: tuple = (),
        links: list | None = None,
        decimals: float | None = None,
    ) -> stat.Panel:
        panel = (
            stat.Panel()
            .id(self._id())
            .title(title)
            .description(description)
            .datasource(PROM)
            .targets(targets)
            .unit(unit)
            .height(5)
            .span(width)
        )
        if steps:
            panel = panel.thresholds(thresholds(*steps))
        if links:
            panel = panel.data_links(links)
        if decimals is not None:
            panel = panel.decimals(decimals)
        return panel

    def table(
        self, title: str, description: str, targets: list, unit: str, *, width: int = 12, links: list | None = None
    ) -> table.Panel:
        panel = (
            table.Panel()
            .id(self._id())
            .title(title)
            .description(description)
            .datasource(PROM)
            .targets([target.format(PromQueryFormat.TABLE) for target in targets])
            .unit(unit)
            .height(8)
            .span(width)
            .with_transformation(DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}}))
        )
        if links:
            panel = panel.data_links(links)
        return panel


def base_dashboard(uid: str, title: str, description: str) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .readonly()
        .link(
            dash.DashboardLink("CommandCenter dashboards")
            .type(DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


def workflow_variable(metric: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable("workflow")
        .label("Workflow")
        .datasource(PROM)
        .query(f"label_values({metric}, workflow)")
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def app_url_variable() -> dash.TextBoxVariable:
    return (
        dash.TextBoxVariable("app_url")
        .label("Service URL")
        .description("Where operators open the service (used by the links to runs); set ?var-app_url=... or edit.")
        .default_value("http://localhost:9002")
    )


def quantiles(metric: str, by: str, selector: str, legend_prefix: str = "") -> list:
    return [
        q(
            f"histogram_quantile({quantile}, sum by (le{by}) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"{legend_prefix}p{int(quantile * 100)}",
            ref,
            exemplar=True,
        )
        for ref, quantile in (("A", 0.5), ("B", 0.95), ("C", 0.99))
    ]


# --- Dashboards ----------------------------------------------------------------------------------------


def workflow_overview() -> dash.Dashboard:
    p = Panels()
    wf = 'workflow=~"$workflow"'
    run_list_for_series = link(
        "Runs of ${__field.labels.workflow}", RUN_LIST + "?workflow__slug__exact=${__field.labels.workflow}"
    )
    failed_runs_for_series = link(
        "Failed runs of ${__field.labels.workflow}",
        RUN_LIST + "?workflow__slug__exact=${__field.labels.workflow}&status__exact=FAILED",
    )
    return (
        base_dashboard(
            "workflow-overview",
            "Workflow Overview",
            "Workflow runs: throughput by status, success rate, durations, active runs and approval waits.",
        )
        .with_variable(workflow_variable("workflow_runs_total"))
        .with_variable(app_url_variable())
        .link(link("Run list", RUN_LIST))
        .with_row(p.row("Runs"))
        .with_panel(
            p.stat(
                "Success rate",
                "Share of finished runs (SUCCESS or FAILED) that succeeded over the dashboard's time range.",
                [
                    q(
                        f'sum(increase(workflow_runs_total{{{wf}, status="SUCCESS"}}[$__range]))'
                        f' / sum(increase(workflow_runs_total{{{wf}, status=~"SUCCESS|FAILED"}}[$__range]))',
                        instant=True,
                    )
                ],
                "percentunit",
                steps=((None, "red"), (0.95, "orange"), (0.99, "green")),
                decimals=2,
            )
        )
        .with_panel(
            p.stat(
                "Runs finished",
                "Runs that reached a terminal status over the dashboard's time range.",
                [q(f"sum(increase(workflow_runs_total{{{wf}}}[$__range]))", instant=True)],
                "short",
                decimals=0,
            )
        )
        .with_panel(
            p.stat(
                "Failed runs",
                "Runs that ended FAILED over the dashboard's time range.",
                [q(f'sum(increase(workflow_runs_total{{{wf}, status="FAILED"}}[$__range]))', instant=True)],
                "short",
                steps=((None, "green"), (1, "red")),
                decimals=0,
                links=[link("Failed runs", RUN_LIST + "?status__exact=FAILED")],
            )
        )
        .with_panel(
            p.stat(
                "Workflow success SLO (30 d)",
                "Success ratio of finished runs over 30 days against the 99% objective (all workflows).",
                [q("1 - slo:workflow_runs:error_ratio_rate30d", instant=True)],
                "percentunit",
                steps=((None, "red"), (0.99, "green")),
                decimals=2,
            )
        )
        .with_panel(
            p.timeseries(
                "Runs by status",
                "Runs finishing per second, by terminal status.",
                [q(f"sum by (status) (rate(workflow_runs_total{{{wf}}}[$__rate_interval]))", "{{status}}")],
                "ops",
                stacked=True,
            )
        )
        .with_panel(
            p.timeseries(
                "Runs by workflow",
                "Runs finishing per second, by workflow and status. Click a series to open its runs.",
                [
                    q(
                        f"sum by (workflow, status) (rate(workflow_runs_total{{{wf}}}[$__rate_interval]))",
                        "{{workflow}} {{status}}",
                    )
                ],
                "ops",
                links=[run_list_for_series, failed_runs_for_series],
            )
        )
        .with_row(p.row("Duration and load"))
        .with_panel(
            p.timeseries(
                "Run duration p50 / p95 / p99",
                "Quantiles of the time from trigger to terminal status (approval waits included).",
                quantiles("workflow_duration_seconds", "", wf),
                "s",
            )
        )
        .with_panel(
            p.timeseries(
                "p95 duration by workflow",
                "95th percentile run duration per workflow. Click a series to open its runs.",
                [
                    q(
                        "histogram_quantile(0.95, sum by (le, workflow) "
                        f"(rate(workflow_duration_seconds_bucket{{{wf}}}[$__rate_interval])))",
                        "{{workflow}}",
                        exemplar=True,
                    )
                ],
                "s",
                links=[run_list_for_series],
            )
        )
        .with_panel(
            p.timeseries(
                "Active runs by status",
                "Runs not finished yet, counted from the database (PENDING, RUNNING, WAITING_APPROVAL).",
                [
                    q(
                        f"sum by (status) (max by (workflow, status) (workflows_active{{{wf}}}))",
                        "{{status}}",
                    )
                ],
                "short",
                stacked=True,
            )
        )
        .with_panel(
            p.timeseries(
                "Approval wait p95 by step",
                "95th percentile time a run waited for an operator's decision, by workflow and step.",
                [
                    q(
                        "histogram_quantile(0.95, sum by (le, workflow, node) "
                        f"(rate(workflow_approval_wait_time_seconds_bucket{{{wf}}}[$__rate_interval])))",
                        "{{workflow}} / {{node}}",
                    )
                ],
                "s",
            )
        )
        .with_panel(
            p.timeseries(
                "Approval decisions",
                "Approval decisions per second, by decision.",
                [
                    q(
                        "sum by (decision) "
                        f"(rate(workflow_approval_wait_time_seconds_count{{{wf}}}[$__rate_interval]))",
                        "{{decision}}",
                    )
                ],
                "ops",
            )
        )
        .with_panel(
            p.table(
                "Runs per workflow",
                "Finished runs per workflow and status over the time range. Click a row to open the runs.",
                [
                    q(
                        f"sum by (workflow, status) (increase(workflow_runs_total{{{wf}}}[$__range]))",
                        instant=True,
                    )
                ],
                "short",
                links=[run_list_for_series],
            )
        )
    )


def agent_performance() -> dash.Dashboard:
    p = Panels()
    sel = 'workflow=~"$workflow", agent_type=~"$agent_type"'
    by_type = 'agent_type=~"$agent_type"'
    return (
        base_dashboard(
            "agent-performance",
            "Agent Performance",
            "Agent attempts: throughput by type and status, error rate, durations, retries and error types.",
        )
        .with_variable(workflow_variable("agent_runs_total"))
        .with_variable(
            dash.QueryVariable("agent_type")
            .label("Agent type")
            .datasource(PROM)
            .query("label_values(agent_runs_total, agent_type)")
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(VariableOption(selected=True, text="All", value="$__all"))
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )
        .with_row(p.row("Attempts"))
        .with_panel(
            p.stat(
                "Agent success rate",
                "Share of finished attempts that succeeded over the time range.",
                [
                    q(
                        f'sum(increase(agent_runs_total{{{sel}, status="SUCCESS"}}[$__range]))'
                        f" / sum(increase(agent_runs_total{{{sel}, {AGENT_FINISHED}}}[$__range]))",
                        instant=True,
                    )
                ],
                "percentunit",
                steps=((None, "red"), (0.95, "orange"), (0.98, "green")),
                decimals=2,
            )
        )
        .with_panel(
            p.stat(
                "Agent success SLO (30 d)",
                "Success ratio of finished attempts over 30 days against the 98% objective (all agents).",
                [q("1 - slo:agent_runs:error_ratio_rate30d", instant=True)],
                "percentunit",
                steps=((None, "red"), (0.98, "green")),
                decimals=2,
            )
        )
        .with_panel(
            p.stat(
                "Retries",
                "Attempts scheduled again after a failure, over the time range.",
                [q(f"sum(increase(agent_retries_total{{{by_type}}}[$__range]))", instant=True)],
                "short",
                decimals=0,
            )
        )
        .with_panel(
            p.stat(
                "Errors",
                "Agent errors over the time range.",
                [q(f"sum(increase(agent_errors_total{{{by_type}}}[$__range]))", instant=True)],
                "short",
                steps=((None, "green"), (1, "orange")),
                decimals=0,
            )
        )
        .with_panel(
            p.timeseries(
                "Attempts by type and status",
                "Agent attempts finishing per second.",
                [
                    q(
                        f"sum by (agent_type, status) (rate(agent_runs_total{{{sel}}}[$__rate_interval]))",
                        "{{agent_type}} {{status}}",
                    )
                ],
                "ops",
            )
        )
        .with_panel(
            p.timeseries(
                "Error rate by type",
                "Share of finished attempts that ended FAILED, TIMED_OUT or LOST.",
                [
                    q(
                        f"sum by (agent_type) (rate(agent_runs_total{{{sel}, {AGENT_FAILED}}}[$__rate_interval]))"
                        " / "
                        f"sum by (agent_type) (rate(agent_runs_total{{{sel}, {AGENT_FINISHED}}}[$__rate_interval]))",
                        "{{agent_type}}",
                    )
                ],
                "percentunit",
            )
        )
        .with_row(p.row("Durations"))
        .with_panel(
            p.timeseries(
                "Attempt duration p50 / p95 / p99",
                "Quantiles of agent attempt durations, all types selected.",
                quantiles("agent_duration_seconds", "", by_type),
                "s",
            )
        )
        .with_panel(
            p.timeseries(
                "p95 duration by type and action",
                "95th percentile attempt duration per agent type and action.",
                [
                    q(
                        "histogram_quantile(0.95, sum by (le, agent_type, action) "
                        f"(rate(agent_duration_seconds_bucket{{{by_type}}}[$__rate_interval])))",
                        "{{agent_type}} {{action}}",
                        exemplar=True,
                    )
                ],
                "s",
            )
        )
        .with_row(p.row("Failures"))
        .with_panel(
            p.timeseries(
                "Retries by reason",
                "Retries scheduled per second, by agent type and reason.",
                [
                    q(
                        f"sum by (agent_type, reason) (rate(agent_retries_total{{{by_type}}}[$__rate_interval]))",
                        "{{agent_type}} {{reason}}",
                    )
                ],
                "ops",
            )
        )
        .with_panel(
            p.timeseries(
                "Errors by type",
                "Agent errors per second, by agent type and error type.",
                [
                    q(
                        f"sum by (agent_type, error_type) (rate(agent_errors_total{{{by_type}}}[$__rate_interval]))",
                        "{{agent_type}} {{error_type}}",
                    )
                ],
                "ops",
            )
        )
        .with_panel(
            p.table(
                "Top error types",
                "The ten most frequent (agent type, error type) pairs over the time range.",
                [
                    q(
                        "topk(10, sum by (agent_type, error_type) "
                        f"(increase(agent_errors_total{{{by_type}}}[$__range])))",
                        instant=True,
                    )
                ],
                "short",
                width=24,
            )
        )
    )


def system_health() -> dash.Dashboard:
    p = Panels()
    app = 'job="orchestration-service"'
    return (
        base_dashboard(
            "system-health",
            "System Health",
            "Scrape targets, the web tier's requests, latency and errors, process resources, database errors "
            "and incoming alert webhooks.",
        )
        .with_row(p.row("Availability"))
        .with_panel(
            p.stat(
                "Targets up",
                "1 when Prometheus' last scrape of the job succeeded (lowest of the job's targets).",
                [q("min by (job) (up)", "{{job}}", instant=True)],
                "short",
                width=12,
                steps=((None, "red"), (1, "green")),
                decimals=0,
            )
        )
        .with_panel(
            p.stat(
                "API availability SLO (30 d)",
                "Share of non-5xx responses (probes excluded) over 30 days against the 99.9% objective.",
                [q("1 - slo:api_requests:error_ratio_rate30d", instant=True)],
                "percentunit",
                steps=((None, "red"), (0.999, "green")),
                decimals=3,
            )
        )
        .with_panel(
            p.stat(
                "Alerts firing",
                "Prometheus alerts currently firing.",
                [q('count(ALERTS{alertstate="firing"}) or vector(0)', instant=True)],
                "short",
                steps=((None, "green"), (1, "red")),
                decimals=0,
            )
        )
        .with_row(p.row("HTTP"))
        .with_panel(
            p.timeseries(
                "Requests by view",
                "Requests per second handled by the web tier, by Django view.",
                [
                    q(
                        "sum by (view) (rate(django_http_requests_total_by_view_transport_method_total"
                        "[$__rate_interval]))",
                        "{{view}}",
                    )
                ],
                "reqps",
            )
        )
        .with_panel(
            p.timeseries(
                "Request latency p95 by view",
                "95th percentile request latency by Django view.",
                [
                    q(
                        "histogram_quantile(0.95, sum by (le, view) "
                        "(rate(django_http_requests_latency_seconds_by_view_method_bucket[$__rate_interval])))",
                        "{{view}}",
                    )
                ],
                "s",
            )
        )
        .with_panel(
            p.timeseries(
                "Responses by status",
                "Responses per second by HTTP status code.",
                [
                    q(
                        "sum by (status) (rate(django_http_responses_total_by_status_view_method_total"
                        "[$__rate_interval]))",
                        "{{status}}",
                    )
                ],
                "reqps",
            )
        )
        .with_panel(
            p.timeseries(
                "5xx ratio",
                "Share of responses that were server errors (probes excluded).",
                [
                    q(
                        "(sum(rate(django_http_responses_total_by_status_view_method_total"
                        f'{{status=~"5..", {NOT_PROBES}}}[$__rate_interval])) or vector(0))'
                        " / sum(rate(django_http_responses_total_by_status_view_method_total"
                        f"{{{NOT_PROBES}}}[$__rate_interval]))",
                        "5xx",
                    )
                ],
                "percentunit",
            )
        )
        .with_row(p.row("Processes and database"))
        .with_panel(
            p.timeseries(
                "Resident memory",
                "Resident memory of each process of the service (gunicorn workers and task workers; instance is "
                "host:pid), as the processes push it over OTLP.",
                [q(f"process_memory_usage_bytes{{{app}}}", "{{instance}}")],
                "bytes",
            )
        )
        .with_panel(
            p.timeseries(
                "CPU",
                "CPU seconds (user + system) used per second by each process of the service.",
                [
                    q(
                        f"sum by (instance) (rate(process_cpu_time_seconds_total{{{app}}}[$__rate_interval]))",
                        "{{instance}}",
                    )
                ],
                "percentunit",
            )
        )
        .with_panel(
            p.timeseries(
                "Open file descriptors",
                "File descriptors (sockets, database connections, files) each process of the service holds open.",
                [q(f"process_open_file_descriptor_count{{{app}}}", "{{instance}}")],
                "short",
            )
        )
        .with_panel(
            p.timeseries(
                "Database errors",
                "Responses answered 503 because the database is unreachable (/readyz, and views whose connection "
                "failed), in all and by view. The alert webhook's 503s are processing errors and left out.",
                [
                    q(f"sum(rate({DB_UNAVAILABLE}[$__rate_interval])) or vector(0)", "503 (database unavailable)"),
                    q(f"sum by (view) (rate({DB_UNAVAILABLE}[$__rate_interval]))", "{{view}}", "B"),
                ],
                "ops",
            )
        )
        .with_panel(
            p.timeseries(
                "Alert webhooks by outcome",
                "Alert notifications received on /webhooks/grafana per second, by source and outcome.",
                [
                    q(
                        "sum by (source, outcome) (rate(webhook_alerts_total[$__rate_interval]))",
                        "{{source}} {{outcome}}",
                    )
                ],
                "ops",
            )
        )
    )


def cost_expr(window: str, by: str, selector: str) -> str:
    """Cost over `window`, summed by `by` (which must include agent_type).

    Each agent type's rate comes from the agent_type:cost_per_run:usd series that operators set in
    deploy/prometheus/rules/cost.yml; agent types without a rate there cost $default_cost_per_run.
    """
    runs = f"sum by ({by}) (increase(agent_runs_total{{{selector}}}[{window}]))"
    return (
        f"({runs} * on (agent_type) group_left () max by (agent_type) (agent_type:cost_per_run:usd))"
        f" or ({runs} * $default_cost_per_run)"
    )


def cost_tracking() -> dash.Dashboard:
    p = Panels()
    sel = 'workflow=~"$workflow", agent_type=~"$agent_type"'
    return (
        base_dashboard(
            "cost-tracking",
            "Cost Tracking",
            "Estimated spend: agent attempts times the per-run cost of their agent type. Rates are set in "
            "deploy/prometheus/rules/cost.yml (agent_type:cost_per_run:usd); unlisted types cost "
            "$default_cost_per_run.",
        )
        .with_variable(workflow_variable("agent_runs_total"))
        .with_variable(
            dash.QueryVariable("agent_type")
            .label("Agent type")
            .datasource(PROM)
            .query("label_values(agent_runs_total, agent_type)")
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(VariableOption(selected=True, text="All", value="$__all"))
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )
        .with_variable(
            dash.TextBoxVariable("default_cost_per_run")
            .label("Default cost per run (USD)")
            .description("Cost of one attempt of an agent type that has no rate in cost.yml.")
            .default_value("0")
        )
        .with_row(p.row("Spend"))
        .with_panel(
            p.stat(
                "Estimated spend",
                "Estimated cost of all agent attempts over the time range.",
                [q(f"sum({cost_expr('$__range', 'agent_type', sel)})", instant=True)],
                "currencyUSD",
                width=8,
                decimals=2,
            )
        )
        .with_panel(
            p.stat(
                "Cost per workflow run",
                "Estimated spend divided by the runs that finished over the time range.",
                [
                    q(
                        f"sum({cost_expr('$__range', 'agent_type', sel)})"
                        ' / sum(increase(workflow_runs_total{workflow=~"$workflow"}[$__range]))',
                        instant=True,
                    )
                ],
                "currencyUSD",
                width=8,
                decimals=4,
            )
        )
        .with_panel(
            p.stat(
                "Spend rate",
                "Estimated spend per hour at the current pace.",
                [q(f"sum({cost_expr('1h', 'agent_type', sel)})", instant=True)],
                "currencyUSD",
                width=8,
                decimals=2,
            )
        )
        .with_panel(
            p.timeseries(
                "Spend per hour by agent type",
                "Estimated spend per hour, by agent type.",
                [
                    q(
                        f"3600 * sum by (agent_type) (rate(agent_runs_total{{{sel}}}[$__rate_interval]))"
                        " * on (agent_type) group_left () max by (agent_type) (agent_type:cost_per_run:usd)",
                        "{{agent_type}}",
                    ),
                    q(
                        f"3600 * sum by (agent_type) (rate(agent_runs_total{{{sel}}}[$__rate_interval]))"
                        " * $default_cost_per_run"
                        " unless on (agent_type) agent_type:cost_per_run:usd",
                        "{{agent_type}} (default rate)",
                        "B",
                    ),
                ],
                "currencyUSD",
                width=24,
                stacked=True,
            )
        )
        .with_row(p.row("Breakdown"))
        .with_panel(
            p.table(
                "Spend by agent type",
                "Estimated spend per agent type over the time range.",
                [q(cost_expr("$__range", "agent_type", sel), instant=True)],
                "currencyUSD",
            )
        )
        .with_panel(
            p.table(
                "Spend by workflow",
                "Estimated spend per workflow over the time range.",
                [q(f"sum by (workflow) ({cost_expr('$__range', 'workflow, agent_type', sel)})", instant=True)],
                "currencyUSD",
            )
        )
        .with_panel(
            p.table(
                "Configured cost per run",
                "The per-run rates operators set in deploy/prometheus/rules/cost.yml.",
                [q("max by (agent_type) (agent_type:cost_per_run:usd)", instant=True)],
                "currencyUSD",
                width=24,
            )
        )
    )


DASHBOARDS = {
    "workflow-overview": workflow_overview,
    "agent-performance": agent_performance,
    "system-health": system_health,
    "cost-tracking": cost_tracking,
}


# --- SLO rules -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatioSLO:
    """An availability-style SLO: the share of bad events must stay under 1 - objective over 30 days."""

    key: str  # used in recorded names: slo:<key>:error_ratio_rate<window>
    slo: str  # the `slo` label
    alert: str  # alert name prefix
    title: str
    objective: float
    bad: str  # selector of bad events
    total: str  # selector of all valid events
    metric: str
    runbook: str


RATIO_SLOS = (
    RatioSLO(
        "workflow_runs",
        "workflow-success",
        "WorkflowSuccess",
        "Workflow success",
        0.99,
        'status="FAILED"',
        'status=~"SUCCESS|FAILED"',
        "workflow_runs_total",
        "slo-workflow-success.md",
    ),
    RatioSLO(
        "api_requests",
        "api-availability",
        "APIAvailability",
        "API availability",
        0.999,
        f'status=~"5..", {NOT_PROBES}',
        NOT_PROBES,
        "django_http_responses_total_by_status_view_method_total",
        "slo-api-availability.md",
    ),
    RatioSLO(
        "agent_runs",
        "agent-success",
        "AgentSuccess",
        "Agent success",
        0.98,
        AGENT_FAILED,
        AGENT_FINISHED,
        "agent_runs_total",
        "slo-agent-success.md",
    ),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d")
# (long window, short window, burn-rate factor) per severity, as in the SRE workbook.
FAST_BURN = (("1h", "5m", 14.4), ("6h", "30m", 6))
SLOW_BURN = (("1d", "2h", 3), ("3d", "6h", 1))
LATENCY_OBJECTIVE_SECONDS = 300
LATENCY_WINDOWS = ("5m", "15m", "1h", "1d", "30d")


def _burn_expr(key: str, objective: float, pairs: tuple) -> str:
    budget = round(1 - objective, 6)
    clauses = [
        f"(slo:{key}:error_ratio_rate{long} > ({factor} * {budget})"
        f" and slo:{key}:error_ratio_rate{short} > ({factor} * {budget}))"
        for long, short, factor in pairs
    ]
    return "\n  or\n".join(clauses) + "\n"


def slo_rules() -> dict[str, Any]:
    groups = []
    for slo in RATIO_SLOS:
        rules: list[dict[str, Any]] = [
            {
                "record": f"slo:{slo.key}:error_ratio_rate{window}",
                "expr": (
                    f"(sum(rate({slo.metric}{{{slo.bad}}}[{window}])) or vector(0))\n"
                    f"  /\nsum(rate({slo.metric}{{{slo.total}}}[{window}]))\n"
                ),
                "labels": {"slo": slo.slo},
            }
            for window in WINDOWS
        ]
        rules.append(
            {
                "record": f"slo:{slo.key}:error_budget_remaining:ratio30d",
                "expr": f"1 - slo:{slo.key}:error_ratio_rate30d / {round(1 - slo.objective, 6)}\n",
                "labels": {"slo": slo.slo},
            }
        )
        for suffix, severity, pairs, horizon in (
            ("BudgetBurn", "critical", FAST_BURN, "2% of the 30-day error budget in 1 hour or 5% in 6 hours"),
            ("BudgetBurnSlow", "warning", SLOW_BURN, "10% of the 30-day error budget in 3 days or more"),
        ):
            rules.append(
                {
                    "alert": f"{slo.alert}{suffix}",
                    "expr": _burn_expr(slo.key, slo.objective, pairs),
                    "for": "2m" if severity == "critical" else "15m",
                    "labels": {"severity": severity, "slo": slo.slo},
                    "annotations": {
                        "summary": (
                            f"{slo.title} is burning its error budget ({{{{ $value | humanizePercentage }}}} errors)"
                        ),
                        "description": (
                            f"{slo.title} (objective {slo.objective * 100:g}% over 30 days) is consuming at least "
                            f"{horizon}."
                        ),
                        "runbook_url": f"deploy/runbooks/{slo.runbook}",
                    },
                }
            )
        groups.append({"name": f"commandcenter.slo.{slo.slo}", "rules": rules})

    latency_rules: list[dict[str, Any]] = [
        {
            "record": "slo:workflow_latency:objective_seconds",
            "expr": f"vector({LATENCY_OBJECTIVE_SECONDS})\n",
            "labels": {"slo": "workflow-latency"},
        }
    ]
    latency_rules += [
        {
            "record": f"slo:workflow_duration_seconds:p95_rate{window}",
            "expr": f"histogram_quantile(0.95, sum by (le) (rate(workflow_duration_seconds_bucket[{window}])))\n",
            "labels": {"slo": "workflow-latency"},
        }
        for window in LATENCY_WINDOWS
    ]
    latency_rules.append(
        {
            "record": "workflow:workflow_duration_seconds:p95_rate15m",
            "expr": "histogram_quantile(0.95, sum by (le, workflow) (rate(workflow_duration_seconds_bucket[15m])))\n",
        }
    )
    latency_rules.append(
        {
            "alert": "WorkflowLatencySLOBreach",
            "expr": (
                "slo:workflow_duration_seconds:p95_rate1h > ignoring (slo) slo:workflow_latency:objective_seconds\n"
                "and\n"
                "slo:workflow_duration_seconds:p95_rate5m > ignoring (slo) slo:workflow_latency:objective_seconds\n"
            ),
            "for": "15m",
            "labels": {"severity": "warning", "slo": "workflow-latency"},
            "annotations": {
                "summary": "Workflow p95 duration is {{ $value | humanizeDuration }}, above the objective",
                "description": (
                    "The 95th percentile duration of all workflow runs has been above "
                    f"{LATENCY_OBJECTIVE_SECONDS} s (slo:workflow_latency:objective_seconds) over both the last "
                    "hour and the last 5 minutes."
                ),
                "runbook_url": "deploy/runbooks/slo-workflow-latency.md",
            },
        }
    )
    groups.append({"name": "commandcenter.slo.workflow-latency", "rules": latency_rules})
    return {"groups": groups}


# --- Grafana-managed alert rules -----------------------------------------------------------------------


def _kebab(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name).lower()


def grafana_runbook_url(path: str) -> str:
    """The runbook link Grafana sends: the repository-relative path under ${RUNBOOK_BASE_URL}.

    Grafana expands braced environment variables in provisioned annotations (and leaves Prometheus-style
    `$labels` alone), so each deployment sets the base once in Grafana's environment (compose, Helm) and
    notifications carry absolute links.
    """
    if "://" in path or not path.startswith("deploy/runbooks/"):
        raise ValueError(f"runbook_url {path!r} is not a repository path deploy/runbooks/<name>.md")
    return "${RUNBOOK_BASE_URL}/" + path


def grafana_alert_rules(rule_files: list[dict[str, Any]]) -> dict[str, Any]:
    """Mirror each Prometheus alert as a Grafana rule: query A is the alert's expression, C fires when A > 0.

    Every alert expression returns only positive values for the series that are firing (the live test in
    tests/deploy checks this), so "A > 0" fires exactly when Prometheus would. Annotations keep Prometheus'
    templates, with $value replaced by the value of query A.
    """
    groups = []
    for rule_file in rule_files:
        for group in rule_file["groups"]:
            rules = []
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                if "$" in rule["expr"]:
                    raise ValueError(f"{rule['alert']}: '$' would be taken for an environment variable by Grafana")
                annotations = {
                    key: value.replace("$value", "$values.A.Value") for key, value in rule["annotations"].items()
                }
                if "runbook_url" in annotations:
                    annotations["runbook_url"] = grafana_runbook_url(annotations["runbook_url"])
                rules.append(
                    {
                        "uid": f"cc-{_kebab(rule['alert'])}"[:40],
                        "title": rule["alert"],
                        "condition": "C",
                        "data": [
                            {
                                "refId": "A",
                                "relativeTimeRange": {"from": 600, "to": 0},
                                "datasourceUid": PROMETHEUS_UID,
                                "model": {
                                    "refId": "A",
                                    "datasource": {"type": "prometheus", "uid": PROMETHEUS_UID},
                                    "expr": rule["expr"].strip(),
                                    "instant": True,
                                    "range": False,
                                    "intervalMs": 15000,
                                    "maxDataPoints": 43200,
                                },
                            },
                            {
                                "refId": "C",
                                "datasourceUid": "__expr__",
                                "model": {
                                    "refId": "C",
                                    "datasource": {"type": "__expr__", "uid": "__expr__"},
                                    "type": "threshold",
                                    "expression": "A",
                                    "conditions": [{"evaluator": {"type": "gt", "params": [0]}}],
                                },
                            },
                        ],
                        "noDataState": "OK",
                        "execErrState": "Error",
                        "for": rule.get("for", "0s"),
                        "annotations": annotations,
                        "labels": rule.get("labels", {}),
                        "isPaused": False,
                    }
                )
            if rules:
                groups.append({"orgId": 1, "name": group["name"], "folder": FOLDER, "interval": "1m", "rules": rules})
    return {"apiVersion": 1, "groups": groups}


# --- Output --------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def to_yaml(data: Any, header: str) -> str:
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
    return header + body


def dashboard_json(uid: str) -> str:
    built = DASHBOARDS[uid]().build()
    return json.dumps(built, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


GENERATED = "# Generated by scripts/gen_dashboards.py; edit the generator, not this file.\n"


def render() -> dict[Path, str]:
    """Every generated file and its content."""
    files = {DASHBOARD_DIR / f"{uid}.json": dashboard_json(uid) for uid in DASHBOARDS}
    slo = slo_rules()
    files[RULES_DIR / "slo.yml"] = to_yaml(
        slo,
        GENERATED + "# SLOs: workflow success 99%, API availability 99.9%, agent success 98% (30 days), and workflow\n"
        "# p95 latency under slo:workflow_latency:objective_seconds. Burn-rate alerts use the SRE workbook's\n"
        "# multi-window pairs: 1h/5m at 14.4x and 6h/30m at 6x page; 1d/2h at 3x and 3d/6h at 1x warn.\n",
    )
    alerts = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())
    files[GRAFANA_ALERT_RULES] = to_yaml(
        grafana_alert_rules([alerts, slo]),
        GENERATED
        + "# Grafana-managed copies of the Prometheus alerts in deploy/prometheus/rules/ (alerts.yml, slo.yml).\n",
    )
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated file is not current")
    args = parser.parse_args(argv)
    stale = []
    for path, content in render().items():
        if args.check:
            if not path.exists() or path.read_text() != content:
                stale.append(path.relative_to(ROOT))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    if stale:
        print("Not current, run `python scripts/gen_dashboards.py`:", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
