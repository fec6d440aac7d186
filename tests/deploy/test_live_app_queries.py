"""A real Prometheus scrapes the running service during a demo load and evaluates every dashboard query,
recording rule and alert expression of deploy/ through its HTTP API.

The web tier (runserver) and a worker run with OTEL_METRICS_EXPORTER=prometheus, both scraped as job
``orchestration-service``; Prometheus loads deploy/prometheus/rules/*.yml. The load goes through the API the
way operators and Grafana use it: scan-and-notify runs, test-failure runs (failed attempts, retries, failed
runs), scan-approve-notify runs approved and rejected by a second user, and alert webhook posts.

The load runs in two phases. The first creates every series; the second makes the counters climb while
Prometheus watches, because a counter that first appears at its final value has no increase and no rate.

Every expression must evaluate without error. An expression must return data unless it is listed in
NO_DATA with the reason this healthy load cannot populate it; a listed one must be empty, so the list stays
true. The failure alerts the load provokes (test-failure fails every run) must fire.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import (
    dashboard_queries,
    dashboards,
    grafana_alert_queries,
    rule_files,
    rules,
    substitute,
    tool,
)
from tests.observability.conftest import Tokens, committed  # noqa: F401 - committed is a fixture used below
from tests.observability.procs import Process, free_port, http, service_env, start_runserver, start_worker, wait_http

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

JOB = "orchestration-service"
WEBHOOK_TOKEN = "live-queries-webhook-token"
ALERT_FIXTURES = Path(__file__).resolve().parents[1] / "alerts" / "fixtures"
TIMEOUT = 60.0  # per wait: the machine running the suite may be busy

# Expressions this load cannot populate, with the reason. Each of them must come back empty.
QUIET_ALERT = "alert that must stay quiet on a healthy service"
NO_DATA: dict[str, str] = {
    "ServiceDown": f"{QUIET_ALERT}: both targets are up",
    "DatabaseConnectionLoss": f"{QUIET_ALERT}: the database is reachable, nothing answers 503",
    "HighErrorRate": f"{QUIET_ALERT}: no response is a 5xx",
    "HighWorkflowDuration": f"{QUIET_ALERT}: runs take seconds, the objective is 300 s",
    "WorkflowLatencySLOBreach": f"{QUIET_ALERT}: runs take seconds, the objective is 300 s",
    "ApprovalBacklog": f"{QUIET_ALERT}: at most two runs wait for an approval, the threshold is 10",
    "HighMemoryUsage": f"{QUIET_ALERT}: the processes hold far less than 1 GiB",
    "APIAvailabilityBudgetBurn": f"{QUIET_ALERT}: no 5xx, the API error ratio is 0",
    "APIAvailabilityBudgetBurnSlow": f"{QUIET_ALERT}: no 5xx, the API error ratio is 0",
    "system-health / Database errors / B": "nothing answers 503 while the database is reachable (by view: no series)",
}
# Grafana notifies from copies of the Prometheus alerts (generated); the copies behave the same.
NO_DATA |= {f"grafana rule {name}": reason for name, reason in list(NO_DATA.items()) if " / " not in name}
# Alerts the load must fire: test-failure fails every run and every attempt of its `fail` agent.
MUST_FIRE = {
    "WorkflowFailureRate",
    "AgentFailureSpike",
    "WorkflowSuccessBudgetBurn",
    "WorkflowSuccessBudgetBurnSlow",
    "AgentSuccessBudgetBurn",
    "AgentSuccessBudgetBurnSlow",
}


def all_queries() -> list[tuple[str, str]]:
    """(where, PromQL): dashboard queries (variables substituted), rule expressions, Grafana alert queries."""
    queries = []
    for dashboard in dashboards().values():
        queries += [(where, substitute(expr)) for where, expr in dashboard_queries(dashboard)]
    queries += [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()]
    return queries + list(grafana_alert_queries())


class Prometheus:
    """Debian's prometheus on the repository's rule files, scraping the given targets as one job."""

    def __init__(self, targets: list[str], tmp: Path) -> None:
        binary = tool("prometheus")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files()],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        args = [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address={self.url.removeprefix('http://')}",
        ]
        self.proc = Process("prometheus", args, {"PATH": "/usr/bin:/bin"})
        wait_http(f"{self.url}/-/ready", self.proc, timeout=TIMEOUT)

    def get(self, path: str, **params: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}?{urllib.parse.urlencode(params)}", timeout=30) as response:  # noqa: S310
            return json.load(response)

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """The JSON answer of POST /api/v1/query, errors included."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        request = urllib.request.Request(  # noqa: S310 - the local Prometheus
            f"{self.url}/api/v1/query", data=urllib.parse.urlencode(params).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return json.load(response)
        except urllib.error.HTTPError as error:
            return json.load(error)

    def values(self, expr: str) -> list[float]:
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        return [float(sample["value"][1]) for sample in answer["data"]["result"]]


def _wait(what: str, check: Any, procs: list[Process], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            proc.check_alive()
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


class Load:
    """The demo load, through the API and the alert webhook."""

    def __init__(self, base: str, tokens: Tokens, prometheus: Prometheus, procs: list[Process]) -> None:
        self.base, self.tokens, self.prometheus, self.procs = base, tokens, prometheus, procs

    def trigger(self, slug: str, **context: str) -> str:
        status, run, _ = http(
            "POST", f"{self.base}/api/workflows/{slug}/trigger", token=self.tokens.trigger, body={"context": context}
        )
        assert status == 202, (slug, status, run)
        return str(run["id"])

    def alert(self, fixture: str) -> None:
        body = json.loads((ALERT_FIXTURES / f"{fixture}.json").read_text())
        status, answer, _ = http("POST", f"{self.base}/webhooks/grafana", token=WEBHOOK_TOKEN, body=body)
        assert status in (200, 202), (fixture, status, answer)

    def decide(self, run_id: str, decision: str) -> None:
        """Approves or rejects the pending approval of a run, as the second user."""

        def pending() -> int | None:
            status, page, _ = http("GET", f"{self.base}/api/approvals?status=PENDING", token=self.tokens.approver)
            assert status == 200, page
            items = page["items"] if isinstance(page, dict) else page
            return next((item["id"] for item in items if item["run_id"] == run_id), None)

        approval = _wait(f"the approval request of run {run_id}", pending, self.procs)
        status, body, _ = http(
            "POST",
            f"{self.base}/api/approvals/{approval}/{decision}",
            token=self.tokens.approver,
            body={"comment": f"{decision} in the live query test"},
        )
        assert status == 200, (decision, status, body)

    def scraped(self, *selectors: str) -> None:
        """Waits until Prometheus has a series for each selector."""
        for selector in selectors:
            _wait(f"Prometheus to scrape {selector}", lambda s=selector: self.prometheus.values(s), self.procs)

    def run(self, django_db_blocker: Any) -> None:
        # Phase 1: every series the dashboards and rules read comes into existence.
        self.trigger("scan-and-notify", target="db.internal")
        self.trigger("test-failure")
        self.alert("grafana_firing")
        self.decide(self.trigger("scan-approve-notify", target="web.internal"), "approve")
        self.scraped(
            'workflow_runs_total{workflow="scan-and-notify", status="SUCCESS"}',
            'workflow_runs_total{workflow="test-failure", status="FAILED"}',
            'workflow_runs_total{workflow="scan-approve-notify", status="SUCCESS"}',
            'agent_runs_total{agent_type="fail", status="FAILED"}',
            'agent_retries_total{agent_type="fail"}',
            'agent_errors_total{agent_type="fail"}',
            'workflow_approval_wait_time_seconds_count{decision="approved"}',
            'webhook_alerts_total{outcome="triggered"}',
        )
        # Phase 2: the counters climb while Prometheus watches.
        for _ in range(6):
            self.trigger("test-failure")
        for target in ("api.internal", "cache.internal", "queue.internal"):
            self.trigger("scan-and-notify", target=target)
        approved, rejected = self.trigger("scan-approve-notify"), self.trigger("scan-approve-notify")
        self.alert("grafana_firing")  # the same alerts again: a duplicate
        self.alert("alertmanager_firing")
        self.decide(approved, "approve")
        self.decide(rejected, "reject")
        self._settle(django_db_blocker)

    def _settle(self, django_db_blocker: Any) -> None:
        """Until every run has ended and Prometheus has scraped every end and evaluated the rules on it."""
        from workflows.models import ACTIVE_RUN_STATUSES, WorkflowRun

        def finished() -> int | None:
            with django_db_blocker.unblock():
                if WorkflowRun.objects.filter(status__in=ACTIVE_RUN_STATUSES).exists():
                    return None
                return WorkflowRun.objects.count()

        runs = _wait("the demo runs to end", finished, self.procs, timeout=2 * TIMEOUT)
        _wait(
            f"Prometheus to scrape all {runs} ended runs, and no active one",
            lambda: (
                sum(self.prometheus.values("workflow_runs_total")) == runs
                and self.prometheus.values("max(workflows_active)") == [0.0]
            ),
            self.procs,
        )
        since = time.time()

        def evaluated() -> bool:
            groups = self.prometheus.get("/api/v1/rules")["data"]["groups"]
            return all(_parse_time(group["lastEvaluation"]) > since + 1 for group in groups)

        _wait("every rule group to be evaluated on the final numbers", evaluated, self.procs)


def _parse_time(value: str) -> float:
    """An RFC 3339 time as Prometheus writes it (nanoseconds, Z or an offset) as a unix time."""
    match = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value)
    assert match, value
    seconds, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{seconds}{zone}").timestamp() + float(f"0.{fraction or 0}")


@dataclass
class Live:
    prometheus: Prometheus
    at: float  # when every expression is evaluated, so that they all see the same samples
    answers: dict[tuple[str, str], dict[str, Any]]


@pytest.fixture(scope="module")
def live(committed: Tokens, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:  # noqa: F811
    tool("prometheus")  # fail early, with the package to install, before anything is started
    web_port, worker_port = free_port(), free_port()
    exporters = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
    procs: list[Process] = []
    prometheus = None
    try:
        procs.append(start_runserver(web_port, service_env(**exporters, WEBHOOK_TOKEN=WEBHOOK_TOKEN)))
        worker_env = service_env(
            **exporters, OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1", OTEL_EXPORTER_PROMETHEUS_PORT=str(worker_port)
        )
        procs.append(start_worker(worker_env))
        wait_http(f"http://127.0.0.1:{worker_port}/metrics", procs[-1], timeout=TIMEOUT)
        prometheus = Prometheus(
            [f"127.0.0.1:{web_port}", f"127.0.0.1:{worker_port}"], tmp_path_factory.mktemp("prometheus")
        )
        procs.append(prometheus.proc)
        Load(f"http://127.0.0.1:{web_port}", committed, prometheus, procs).run(django_db_blocker)
        at = time.time()
        answers = {(where, expr): prometheus.query(expr, at) for where, expr in all_queries()}
        yield Live(prometheus, at, answers)
    except BaseException:
        for proc in procs:
            print(f"--- {proc.name} ---\n{proc.output()[-4000:]}")
        raise
    finally:
        for proc in reversed(procs):
            if proc.proc.poll() is None:
                proc.stop(timeout=30)


@pytest.mark.parametrize(
    ("where", "expr"), all_queries(), ids=[f"{i}:{where}" for i, (where, _) in enumerate(all_queries())]
)
def test_every_dashboard_query_and_rule_expression_evaluates_against_the_live_app(
    live: Live, where: str, expr: str
) -> None:
    answer = live.answers[(where, expr)]
    assert answer["status"] == "success", f"{where}: {answer.get('error')}\n{expr}"
    result = answer["data"]["result"]
    if where in NO_DATA:
        assert not result, f"{where} was expected to be empty ({NO_DATA[where]}) but returned {result}"
    else:
        assert result, f"{where} returned no data under the demo load:\n{expr}"


def test_the_expressions_without_data_are_exactly_the_listed_ones(live: Live) -> None:
    empty = sorted({where for (where, _), answer in live.answers.items() if not answer["data"]["result"]})
    print("\nExpressions without data under the demo load:")
    for where in empty:
        print(f"  {where}: {NO_DATA.get(where, 'NOT EXPECTED')}")
    assert empty == sorted(NO_DATA)


@pytest.mark.parametrize("alert", sorted(MUST_FIRE))
def test_the_failures_of_the_load_fire_their_alerts(live: Live, alert: str) -> None:
    results = [
        answer["data"]["result"]
        for (where, _), answer in live.answers.items()
        if where in (alert, f"grafana rule {alert}")
    ]
    assert len(results) == 2, "the Prometheus alert and its Grafana copy"
    for result in results:
        _assert_fires(alert, result)


def _assert_fires(alert: str, result: list[dict[str, Any]]) -> None:
    assert result, f"{alert} does not fire although every test-failure run and attempt failed"
    assert all(float(sample["value"][1]) > 0 for sample in result), result
    if alert in {"WorkflowFailureRate"}:
        assert {sample["metric"]["workflow"] for sample in result} == {"test-failure"}
    if alert in {"AgentFailureSpike"}:
        assert {sample["metric"]["agent_type"] for sample in result} == {"fail"}


def test_prometheus_evaluates_every_loaded_rule_without_error(live: Live) -> None:
    groups = live.prometheus.get("/api/v1/rules")["data"]["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]
    assert len(loaded) == len(list(rules()))
    assert [(rule["name"], rule.get("lastError")) for rule in loaded if rule["health"] != "ok"] == []


def test_both_processes_are_scraped_as_the_service_job(live: Live) -> None:
    up = live.prometheus.query(f'up{{job="{JOB}"}}', live.at)["data"]["result"]
    assert [float(sample["value"][1]) for sample in up] == [1.0, 1.0]
    # Each process's own resources, under the names the dashboards and HighMemoryUsage read.
    memory = live.prometheus.query(f'process_memory_usage_bytes{{job="{JOB}"}}', live.at)["data"]["result"]
    assert len(memory) == 2


def test_the_dashboard_variables_offer_the_workflows_of_the_load(live: Live) -> None:
    result = live.prometheus.query("count by (workflow) (workflow_runs_total)", live.at)["data"]["result"]
    workflows = {sample["metric"]["workflow"] for sample in result}
    assert {"scan-and-notify", "test-failure", "scan-approve-notify"} <= workflows
