"""What the deploy/ tests share: paths, the metric catalogue, the queries deploy/ contains, and the tools."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES_DIR = DEPLOY / "prometheus" / "rules"
RULE_TESTS_DIR = DEPLOY / "prometheus" / "tests"
DASHBOARD_DIR = DEPLOY / "grafana" / "dashboards"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
RUNBOOKS = DEPLOY / "runbooks"

DATASOURCE_UIDS = {"prometheus", "tempo", "loki"}

# Images with no shell and no HTTP client (distroless, or FROM scratch), by repository, each with the path of its
# own binary when that binary can check the service's health itself (None: it cannot). A compose healthcheck for
# such an image may only be the exec form (CMD) of that binary: CMD-SHELL, sh, wget or curl cannot run there.
# tests/deploy/test_compose.py holds the compose file to this list.
DISTROLESS_IMAGES: dict[str, str | None] = {
    # No health subcommand; its health_check extension answers on :13133 to a probe from outside.
    "otel/opentelemetry-collector-contrib": None,
    # distroless since 2.x (busybox removed): no shell, no wget, and no health subcommand.
    "grafana/tempo": None,
    # distroless in 3.x; `loki -health` exists only from 3.7 on (the stack pins 3.6).
    "grafana/loki": None,
}
DASHBOARD_UIDS = {"workflow-overview", "agent-performance", "system-health", "cost-tracking"}

# DESIGN.md's metric catalogue under its Prometheus names.
CATALOGUE_COUNTERS = {"workflow_runs", "agent_runs", "agent_errors", "agent_retries", "webhook_alerts"}
CATALOGUE_HISTOGRAMS = {"workflow_duration_seconds", "workflow_approval_wait_time_seconds", "agent_duration_seconds"}
CATALOGUE_GAUGES = {"workflows_active"}
CATALOGUE = (
    {f"{name}_total" for name in CATALOGUE_COUNTERS}
    | {f"{name}_{suffix}" for name in CATALOGUE_HISTOGRAMS for suffix in ("bucket", "sum", "count")}
    | CATALOGUE_GAUGES
)
# The resources every process reports (observability.metrics.PROCESS_METRICS), under the exporters' names.
PROCESS_SERIES = {"process_memory_usage_bytes", "process_cpu_time_seconds_total", "process_open_file_descriptor_count"}
# What the exporters around the code emit: django-prometheus, Prometheus' own synthetic series, and Tempo's
# metrics generator (used by the Tempo datasource). Not django-prometheus' django_db_* metrics: they come from
# its database backend, which settings do not use. Not the Python client's process collector either: under
# gunicorn (multiprocess mode) /metrics has none of its series; every process reports PROCESS_SERIES instead.
EXPORTER_METRICS = {
    "django_http_requests_total_by_view_transport_method_total",
    "django_http_responses_total_by_status_view_method_total",
    "django_http_requests_latency_seconds_by_view_method_bucket",
    "up",
    "ALERTS",
    "traces_spanmetrics_calls_total",
}

_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "Inf",
    "NaN",
    "inf",
    "nan",
}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def grafana_expand(value: str, env: dict[str, str]) -> str:
    """A provisioning value as Grafana reads it: $NAME and ${NAME} from its environment ("" when unset), $$ a $."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1) or match.group(2), "")

    return re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)", replace, value)


def compose_default(value: str) -> str:
    """The value compose uses when the variable is unset: ${NAME:-default} -> default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def rules() -> Iterator[dict[str, Any]]:
    for path in rule_files():
        for group in load_yaml(path)["groups"]:
            yield from group["rules"]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable of a dashboard."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield f"{dashboard['uid']} / {panel['title']} / {target['refId']}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"])
            assert match, f"{dashboard['uid']}: variable {variable['name']} uses an unsupported query"
            metric, label = match.groups()
            yield f"{dashboard['uid']} / ${variable['name']}", f"count by ({label}) ({metric})"


def grafana_alert_queries() -> Iterator[tuple[str, str]]:
    for group in load_yaml(PROVISIONING / "alerting" / "rules.yaml")["groups"]:
        for rule in group["rules"]:
            for query in rule["data"]:
                if "expr" in query["model"]:
                    yield f"grafana rule {rule['title']}", query["model"]["expr"]


# Concrete values for the template variables the dashboards use.
VARIABLE_VALUES = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$workflow": ".*",
    "$agent_type": ".*",
    "$default_cost_per_run": "0.01",
}


def substitute(expr: str) -> str:
    for name in sorted(VARIABLE_VALUES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLE_VALUES[name])
    assert "$" not in expr, f"unknown dashboard variable in {expr!r}"
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, strings and groupings removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\w+", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\s*(\()?", expr):
        name, call = match.groups()
        if call or name in _PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_dashboards", ROOT / "scripts" / "gen_dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def tool(name: str) -> str:
    """A Prometheus binary; CI installs Debian's `prometheus` package. Missing is a failure, not a skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: apt-get install -y prometheus (it provides {name})", pytrace=False)
    return path


def rendered_runbook(annotation: str, base: str) -> str:
    """The runbook link the service puts in a notification for an alert with this runbook_url annotation, with
    RUNBOOK_BASE_URL set to ``base``."""
    from django.test import override_settings

    from alerts.mapping import runbook_url
    from alerts.payload import parse

    payload = json.loads((ROOT / "tests" / "alerts" / "fixtures" / "alertmanager_firing.json").read_text())
    payload["commonAnnotations"]["runbook_url"] = annotation
    for alert in payload["alerts"]:
        alert["annotations"]["runbook_url"] = annotation
    with override_settings(RUNBOOK_BASE_URL=base, RUNBOOK_URL_MAP={}):
        return runbook_url(parse(payload))
