"""A real Prometheus loads deploy/'s rules, scrapes an endpoint exposing every metric deploy/ queries, and
evaluates every dashboard query, recording rule and alert expression through its HTTP API.

The endpoint serves the service's metrics the way its exporters name and label them, counting up on every
scrape, in a state that is bad on every count (failures, 5xx, slow runs, a backlog, a database outage,
high memory, a dead target), so that every alert expression must return series, not just parse.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.children import popen
from tests.deploy.helpers import (
    RULES_DIR,
    alert_rules,
    dashboard_queries,
    dashboards,
    rule_files,
    rules,
    substitute,
    tool,
)

WORKFLOW = "scan-and-notify"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _histogram(name: str, labels: str, buckets: list[float], observed: float, count: float) -> list[str]:
    """Exposition lines for `count` observations of `observed` seconds."""
    lines = [f'{name}_bucket{{{labels},le="{le}"}} {count if observed <= le else 0}' for le in buckets]
    lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {count}')
    lines.append(f"{name}_sum{{{labels}}} {observed * count}")
    lines.append(f"{name}_count{{{labels}}} {count}")
    return lines


def exposition(n: int) -> str:
    """The metrics after the n-th scrape."""
    wf = f'workflow="{WORKFLOW}"'
    requests = "django_http_requests_total_by_view_transport_method_total"
    responses = "django_http_responses_total_by_status_view_method_total"
    trigger = 'view="api-1.0.0:trigger_workflow"'
    seconds = [0.1, 0.5, 1, 5, 30, 60, 300, 900, 3600]
    lines = [
        # half of the runs fail; cancellations and rejections are operator decisions
        f'workflow_runs_total{{{wf},status="FAILED",trigger="api"}} {10 * n}',
        f'workflow_runs_total{{{wf},status="SUCCESS",trigger="api"}} {10 * n}',
        f'workflow_runs_total{{{wf},status="CANCELLED",trigger="admin"}} {n}',
        f'workflow_runs_total{{{wf},status="REJECTED",trigger="alert"}} {n}',
        # runs take 10 minutes: above the 300 s objective
        *_histogram("workflow_duration_seconds", f'{wf},status="SUCCESS"', seconds, 600, 20 * n),
        f'workflows_active{{{wf},status="WAITING_APPROVAL"}} 12',
        f'workflows_active{{{wf},status="RUNNING"}} 3',
        f'workflows_active{{{wf},status="PENDING"}} 1',
        *_histogram("workflow_approval_wait_time_seconds", f'{wf},node="approve",decision="approved"', seconds, 120, n),
        f'agent_runs_total{{agent_type="http",status="FAILED",{wf}}} {10 * n}',
        f'agent_runs_total{{agent_type="http",status="TIMED_OUT",{wf}}} {n}',
        f'agent_runs_total{{agent_type="http",status="SUCCESS",{wf}}} {5 * n}',
        f'agent_runs_total{{agent_type="notifier",status="SUCCESS",{wf}}} {5 * n}',
        # an agent type without a configured cost rate
        f'agent_runs_total{{agent_type="echo",status="SUCCESS",{wf}}} {5 * n}',
        *_histogram("agent_duration_seconds", 'agent_type="http",action="get",status="FAILED"', seconds, 2, 10 * n),
        *_histogram("agent_duration_seconds", 'agent_type="echo",action="",status="SUCCESS"', seconds, 0.1, 5 * n),
        f'agent_errors_total{{agent_type="http",error_type="HTTPStatusError"}} {10 * n}',
        f'agent_retries_total{{agent_type="http",reason="error"}} {3 * n}',
        f'webhook_alerts_total{{source="grafana",status="firing",outcome="accepted"}} {n}',
        f'webhook_alerts_total{{source="grafana",status="firing",outcome="duplicate"}} {n}',
        # django-prometheus: a fifth of the API answers 500, and /readyz says the database is gone
        f'{requests}{{{trigger},transport="http",method="POST"}} {10 * n}',
        f'{requests}{{view="readyz",transport="http",method="GET"}} {n}',
        f'{responses}{{status="202",{trigger},method="POST"}} {8 * n}',
        f'{responses}{{status="500",{trigger},method="POST"}} {2 * n}',
        f'{responses}{{status="503",view="readyz",method="GET"}} {n}',
        *_histogram(
            "django_http_requests_latency_seconds_by_view_method",
            f'{trigger},method="POST"',
            seconds,
            0.5,
            10 * n,
        ),
        f'django_db_new_connection_errors_total{{alias="default",vendor="postgresql"}} {n}',
        f'django_db_errors_total{{alias="default",vendor="postgresql",type="OperationalError"}} {n}',
        # every process's resources (observability.metrics.PROCESS_METRICS): 2 GiB resident
        "process_memory_usage_bytes 2147483648",
        f'process_cpu_time_seconds_total{{type="user"}} {0.4 * n}',
        f'process_cpu_time_seconds_total{{type="system"}} {0.1 * n}',
        "process_open_file_descriptor_count 42",
    ]
    return "\n".join(lines) + "\n"


class _MetricsHandler(BaseHTTPRequestHandler):
    scrapes = 0

    def do_GET(self) -> None:
        type(self).scrapes += 1
        body = exposition(type(self).scrapes).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class PrometheusAPI:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:  # noqa: S310
            return json.load(response)

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """POST /api/v1/query (now, or at the unix time `at`); returns the JSON answer, errors included."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/query", data=data, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.load(response)
        except urllib.error.HTTPError as error:
            return json.load(error)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusAPI]:
    binary = tool("prometheus")
    tmp: Path = tmp_path_factory.mktemp("prometheus")
    app = ThreadingHTTPServer(("127.0.0.1", 0), _MetricsHandler)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    # Bound but not listening: connections are refused, and no other process can take the port meanwhile.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files()],
        "scrape_configs": [
            {
                "job_name": "orchestration-service",
                "static_configs": [{"targets": [f"127.0.0.1:{app.server_address[1]}"]}],
            },
            # nothing listens there: the target ServiceDown must report
            {"job_name": "worker-metrics", "static_configs": [{"targets": [f"127.0.0.1:{dead.getsockname()[1]}"]}]},
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "prometheus.log").open("w"),
    )
    api = PrometheusAPI(f"http://127.0.0.1:{port}")
    try:
        _wait_for_data(api, process, tmp / "prometheus.log")
        yield api
    finally:
        process.terminate()
        process.wait(timeout=10)
        app.shutdown()
        dead.close()


def _wait_for_data(api: PrometheusAPI, process: subprocess.Popen, log: Path) -> None:
    """Until the endpoint has been scraped a few times and every recording rule has produced a sample."""
    records = sorted({rule["record"] for rule in rules() if "record" in rule})
    deadline = time.monotonic() + 25
    missing: list[str] = records
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{api.url}/-/ready", timeout=2):  # noqa: S310
                pass
            scrapes = api.query('count_over_time(up{job="orchestration-service"}[1m])')["data"]["result"]
            if scrapes and float(scrapes[0]["value"][1]) >= 6:
                missing = [name for name in records if not api.query(name)["data"]["result"]]
                if not missing:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"no data after 25 s; recording rules without samples: {missing}")


def _all_queries() -> list[tuple[str, str]]:
    queries = []
    for dashboard in dashboards().values():
        queries += [(where, substitute(expr)) for where, expr in dashboard_queries(dashboard)]
    queries += [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()]
    return queries


@pytest.mark.parametrize(("where", "expr"), _all_queries(), ids=lambda value: value if " " not in value else None)
def test_every_dashboard_query_and_rule_expression_evaluates_with_data(
    prometheus: PrometheusAPI, where: str, expr: str
) -> None:
    answer = prometheus.query(expr)
    assert answer["status"] == "success", f"{where}: {answer.get('error')}"
    assert answer["data"]["result"], f"{where} returned no data: {expr}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_expression_returns_positive_values_so_grafana_s_threshold_fires_with_it(
    prometheus: PrometheusAPI, rule: dict
) -> None:
    result = prometheus.query(rule["expr"])["data"]["result"]
    assert result
    assert all(float(sample["value"][1]) > 0 for sample in result), result


def test_prometheus_evaluates_every_loaded_rule_without_error(prometheus: PrometheusAPI) -> None:
    groups = prometheus.get("/api/v1/rules")["data"]["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]
    assert len(loaded) == len(list(rules()))
    assert [(rule["name"], rule.get("lastError")) for rule in loaded if rule["health"] != "ok"] == []
    assert {group["file"] for group in groups} == {str(path) for path in rule_files()}
    assert str(RULES_DIR) in next(iter(groups))["file"]


def test_the_cost_dashboard_prices_configured_types_by_their_rate_and_others_by_the_default(
    prometheus: PrometheusAPI,
) -> None:
    expr = next(
        expr for where, expr in dashboard_queries(dashboards()["cost-tracking"]) if "Spend by agent type" in where
    )
    at = time.time() - 1  # both queries see the same samples
    result = prometheus.query(substitute(expr), at)["data"]["result"]
    per_type = {sample["metric"]["agent_type"]: float(sample["value"][1]) for sample in result}
    assert set(per_type) == {"http", "notifier", "echo"}
    runs = {
        sample["metric"]["agent_type"]: float(sample["value"][1])
        for sample in prometheus.query("sum by (agent_type) (increase(agent_runs_total[1h]))", at)["data"]["result"]
    }
    assert per_type["http"] == pytest.approx(runs["http"] * 0.0005)
    assert per_type["notifier"] == pytest.approx(runs["notifier"] * 0.0001)
    assert per_type["echo"] == pytest.approx(runs["echo"] * 0.01)  # $default_cost_per_run in the test
