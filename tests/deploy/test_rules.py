"""Prometheus configuration and rules, checked and unit-tested by promtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import (
    DEPLOY,
    PROVISIONING,
    ROOT,
    RULE_TESTS_DIR,
    alert_rules,
    load_yaml,
    rule_files,
    tool,
)


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(arg) for arg in args], capture_output=True, text=True, timeout=60, check=False)


def test_the_prometheus_config_is_valid_with_the_rule_files_it_loads(tmp_path: Path) -> None:
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules/*.yml" in config
    # The container's mount point for deploy/prometheus/rules, pointed at the repository instead.
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/rules", str(DEPLOY / "prometheus" / "rules"))
    )
    result = run(tool("promtool"), "check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    for path in rule_files():
        assert f"Checking {path}" in result.stdout


def test_every_rule_file_passes_promtool_check_rules() -> None:
    result = run(tool("promtool"), "check", "rules", *rule_files())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(rule_files())


def test_the_rule_unit_tests_pass() -> None:
    tests = sorted(RULE_TESTS_DIR.glob("*.yml"))
    assert tests
    result = run(tool("promtool"), "test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS_DIR.glob("*.yml"):
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"


def test_the_issue_s_alerts_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "WorkflowFailureRate",
        "ServiceDown",
        "DatabaseConnectionLoss",
        "HighErrorRate",
        "HighWorkflowDuration",
        "AgentFailureSpike",
        "ApprovalBacklog",
        "HighMemoryUsage",
    } <= names
    # Multi-window, multi-burn-rate alerts for the three ratio SLOs, and the latency SLO.
    for slo in ("WorkflowSuccess", "APIAvailability", "AgentSuccess"):
        assert {f"{slo}BudgetBurn", f"{slo}BudgetBurnSlow"} <= names
    assert "WorkflowLatencySLOBreach" in names


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_each_alert_has_a_severity_a_summary_and_a_runbook_that_exists(rule: dict) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["annotations"]["summary"]
    runbook = rule["annotations"]["runbook_url"]
    assert re.fullmatch(r"deploy/runbooks/[a-z0-9-]+\.md", runbook)
    text = (ROOT / runbook).read_text()
    assert rule["alert"] in text.splitlines()[0], f"{runbook} does not start with the alert's name"
    for section in ("## Meaning", "## Check", "## Fix"):
        assert section in text, f"{runbook} lacks {section}"


def test_grafana_notifies_from_exactly_the_prometheus_alert_expressions() -> None:
    groups = load_yaml(PROVISIONING / "alerting" / "rules.yaml")["groups"]
    assert {group["folder"] for group in groups} == {"CommandCenter"}
    grafana = {rule["title"]: rule for group in groups for rule in group["rules"]}
    prometheus = {rule["alert"]: rule for rule in alert_rules()}
    assert grafana.keys() == prometheus.keys()
    for name, rule in prometheus.items():
        copy = grafana[name]
        query = next(item for item in copy["data"] if item["refId"] == "A")
        assert query["datasourceUid"] == "prometheus"
        assert query["model"]["expr"] == rule["expr"].strip()
        assert copy["condition"] == "C"
        assert copy["for"] == rule["for"]
        assert copy["labels"] == rule["labels"]
        # Grafana expands ${RUNBOOK_BASE_URL} from its environment: its notifications carry absolute links.
        assert copy["annotations"]["runbook_url"] == "${RUNBOOK_BASE_URL}/" + rule["annotations"]["runbook_url"]
    uids = [rule["uid"] for rule in grafana.values()]
    assert len(set(uids)) == len(uids) and all(len(uid) <= 40 for uid in uids)
