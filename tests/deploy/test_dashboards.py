"""Dashboards and every query in deploy/: generated files current, datasources provisioned, metric names real."""

from __future__ import annotations

import re

import pytest

from tests.deploy.helpers import (
    CATALOGUE,
    DASHBOARD_UIDS,
    DATASOURCE_UIDS,
    DEPLOY,
    EXPORTER_METRICS,
    PROCESS_SERIES,
    PROVISIONING,
    ROOT,
    RUNBOOKS,
    dashboard_queries,
    dashboards,
    generator,
    grafana_alert_queries,
    load_yaml,
    metric_names,
    panels,
    recorded_names,
    rules,
)


def test_the_committed_generated_files_are_what_the_generator_produces() -> None:
    rendered = generator().render()
    assert {path.relative_to(ROOT).as_posix() for path in rendered} >= {
        f"deploy/grafana/dashboards/{uid}.json" for uid in DASHBOARD_UIDS
    }
    stale = [str(path.relative_to(ROOT)) for path, content in rendered.items() if path.read_text() != content]
    assert stale == [], "run `python scripts/gen_dashboards.py` and commit the result"


def test_the_four_dashboards_are_provisioned_into_the_commandcenter_folder() -> None:
    assert set(dashboards()) == DASHBOARD_UIDS
    assert {dashboard["uid"] for dashboard in dashboards().values()} == DASHBOARD_UIDS
    provider = load_yaml(PROVISIONING / "dashboards" / "dashboards.yaml")["providers"][0]
    assert provider["folder"] == "CommandCenter"
    compose = load_yaml(DEPLOY / "docker-compose.yml")
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in compose["services"]["grafana"]["volumes"]


def _datasource_uids(node: object) -> set[str]:
    """The uid of every `datasource` object anywhere in a dashboard."""
    if isinstance(node, dict):
        found = {node["datasource"]["uid"]} if isinstance(node.get("datasource"), dict) else set()
        return found | {uid for value in node.values() for uid in _datasource_uids(value)}
    if isinstance(node, list):
        return {uid for item in node for uid in _datasource_uids(item)}
    return set()


@pytest.mark.parametrize("uid", sorted(DASHBOARD_UIDS))
def test_every_datasource_a_dashboard_uses_is_provisioned(uid: str) -> None:
    provisioned = {
        source["uid"] for source in load_yaml(PROVISIONING / "datasources" / "datasources.yaml")["datasources"]
    }
    assert provisioned == DATASOURCE_UIDS
    used = _datasource_uids(dashboards()[uid])
    assert used and used <= provisioned
    for panel in panels(dashboards()[uid]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in provisioned, panel["title"]
            assert all(target["datasource"]["uid"] in provisioned for target in panel["targets"]), panel["title"]


def _runbook_queries() -> list[tuple[str, str]]:
    found = []
    for path in RUNBOOKS.glob("*.md"):
        for span in re.findall(r"`([^`]+)`", path.read_text()):
            if " | " in span:  # LogQL for Loki, not PromQL
                continue
            if re.search(r"\b(rate|increase|sum|histogram_quantile)\(|\{\w+=~?\"", span) or re.fullmatch(
                r"[a-z_]+:[\w:]+|[a-z_]+_(total|bytes|seconds|bucket|count|sum)", span
            ):
                found.append((path.name, span))
    return found


def test_every_metric_name_in_deploy_is_emitted_by_the_code_its_exporters_or_our_recording_rules() -> None:
    known = CATALOGUE | PROCESS_SERIES | EXPORTER_METRICS | recorded_names()
    queries = [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()]
    for dashboard in dashboards().values():
        queries += list(dashboard_queries(dashboard))
    queries += list(grafana_alert_queries())
    tempo = next(
        source
        for source in load_yaml(PROVISIONING / "datasources" / "datasources.yaml")["datasources"]
        if source["uid"] == "tempo"
    )
    queries += [
        ("tempo traces to metrics", query["query"]) for query in tempo["jsonData"]["tracesToMetrics"]["queries"]
    ]
    runbook_queries = _runbook_queries()
    assert len(runbook_queries) > 10
    queries += runbook_queries
    unknown = {(where, name) for where, expr in queries for name in metric_names(expr) if name not in known}
    assert unknown == set()
    # and every metric of the catalogue is watched somewhere
    used = {name for _, expr in queries for name in metric_names(expr)}
    assert {name for name in CATALOGUE if not name.endswith(("_sum", "_count"))} - used == set()


def test_the_metric_name_extractor_finds_names_and_ignores_labels_functions_and_variables() -> None:
    assert metric_names(
        'sum by (workflow) (rate(workflow_runs_total{status="FAILED", view!~"a|b"}[$__rate_interval]))'
        " / on (workflow) group_left () slo:x:y * 3600 + vector(0) > bool 1"
    ) == {"workflow_runs_total", "slo:x:y"}


def test_workflow_overview_filters_by_workflow_and_links_to_the_run_list() -> None:
    overview = dashboards()["workflow-overview"]
    variables = {variable["name"]: variable for variable in overview["templating"]["list"]}
    assert variables["workflow"]["query"] == "label_values(workflow_runs_total, workflow)"
    assert variables["workflow"]["includeAll"] and variables["workflow"]["allValue"] == ".*"
    exprs = [expr for where, expr in dashboard_queries(overview) if "/ $" not in where]
    assert all('workflow=~"$workflow"' in expr for expr in exprs if "workflow_" in expr and "slo:" not in expr)
    urls = [link["url"] for link in overview["links"] if link["type"] == "link"] + [
        link["url"]
        for panel in panels(overview)
        for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
    ]
    assert "${app_url}/admin/workflows/workflowrun/" in urls
    assert "${app_url}/admin/workflows/workflowrun/?workflow__slug__exact=${__field.labels.workflow}" in urls


def test_the_seed_s_panels_are_there() -> None:
    titles = {uid: {panel["title"] for panel in panels(dashboard)} for uid, dashboard in dashboards().items()}
    assert {
        "Runs by status",
        "Success rate",
        "Run duration p50 / p95 / p99",
        "Active runs by status",
        "Approval wait p95 by step",
    } <= titles["workflow-overview"]
    assert {
        "Attempts by type and status",
        "Error rate by type",
        "Attempt duration p50 / p95 / p99",
        "Retries by reason",
        "Errors by type",
    } <= titles["agent-performance"]
    assert {
        "Targets up",
        "Requests by view",
        "Request latency p95 by view",
        "5xx ratio",
        "Resident memory",
        "CPU",
        "Database errors",
        "Alert webhooks by outcome",
    } <= titles["system-health"]
    assert {"Estimated spend", "Spend by agent type", "Configured cost per run"} <= titles["cost-tracking"]


def test_cost_rates_are_set_per_agent_type_in_a_rule_file_operators_edit() -> None:
    cost = load_yaml(DEPLOY / "prometheus" / "rules" / "cost.yml")["groups"][0]["rules"]
    types = [rule["labels"]["agent_type"] for rule in cost]
    assert all(rule["record"] == "agent_type:cost_per_run:usd" for rule in cost)
    assert len(types) == len(set(types))
    assert all(re.fullmatch(r"vector\([0-9.]+\)", rule["expr"]) for rule in cost)
    variables = {variable["name"]: variable for variable in dashboards()["cost-tracking"]["templating"]["list"]}
    assert variables["default_cost_per_run"]["type"] == "textbox"


@pytest.mark.parametrize("uid", sorted(DASHBOARD_UIDS))
def test_panel_ids_are_unique_so_view_panel_links_stay_stable(uid: str) -> None:
    ids = [panel["id"] for panel in panels(dashboards()[uid])]
    assert 0 not in ids and len(ids) == len(set(ids))
