"""A real Prometheus (Debian's ``prometheus``) scrapes the web tier and a worker during a small demo load.

Both processes run with OTEL_METRICS_EXPORTER=prometheus: the web serves the OpenTelemetry metrics on the
same /metrics as django-prometheus, the worker on its own port. Every catalogue metric must be there
under its Prometheus name with the catalogue's labels, and no metric may have more than 100 series.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.observability.conftest import Tokens
from tests.observability.procs import (
    Process,
    free_port,
    http,
    service_env,
    start_runserver,
    start_worker,
    wait_http,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

PROMETHEUS = "/usr/bin/prometheus"
FIXTURES = Path(__file__).resolve().parent.parent / "alerts" / "fixtures"

# Prometheus name -> labels from the catalogue
CATALOGUE = {
    "workflow_runs_total": {"workflow", "status", "trigger"},
    "workflow_duration_seconds_bucket": {"workflow", "status", "le"},
    "workflow_duration_seconds_sum": {"workflow", "status"},
    "workflow_duration_seconds_count": {"workflow", "status"},
    "workflows_active": {"workflow", "status"},
    "workflow_approval_wait_time_seconds_bucket": {"workflow", "node", "decision", "le"},
    "workflow_approval_wait_time_seconds_count": {"workflow", "node", "decision"},
    "agent_runs_total": {"agent_type", "status", "workflow"},
    "agent_duration_seconds_bucket": {"agent_type", "action", "status", "le"},
    "agent_duration_seconds_count": {"agent_type", "action", "status"},
    "agent_errors_total": {"agent_type", "error_type"},
    "agent_retries_total": {"agent_type", "reason"},
}
WEBHOOK = {"webhook_alerts_total": {"source", "status", "outcome"}}
# Added by Prometheus (job, instance) and by the OpenTelemetry exporter (instrumentation scope).
AMBIENT = {"__name__", "job", "instance", "otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}


class Prometheus:
    def __init__(self, targets: dict[str, str]) -> None:
        if not Path(PROMETHEUS).exists() and not shutil.which("prometheus"):
            pytest.fail(
                "the prometheus binary is missing: install Debian's package "
                "(apt-get install -y prometheus) so that /usr/bin/prometheus exists"
            )
        binary = PROMETHEUS if Path(PROMETHEUS).exists() else str(shutil.which("prometheus"))
        self.dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        scrape = [
            {"job_name": job, "scrape_interval": "1s", "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ]
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": scrape}
        (self.dir / "prometheus.yml").write_text(json.dumps(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            binary,
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.proc = Process("prometheus", args, {"PATH": "/usr/bin:/bin"})
        wait_http(f"{self.url}/-/ready", self.proc)

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the local Prometheus
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def series(self, name: str) -> list[dict[str, str]]:
        return self.get("/api/v1/series", **{"match[]": f'{{__name__="{name}"}}'})

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait(what: str, check: Any, timeout: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def scraped(committed: Tokens, django_db_blocker: Any) -> Iterator[Prometheus]:
    from workflows.models import ACTIVE_RUN_STATUSES, WorkflowRun

    web_port, worker_port = free_port(), free_port()
    exporters = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
    web = start_runserver(web_port, service_env(**exporters))
    worker = start_worker(
        service_env(
            **exporters, OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1", OTEL_EXPORTER_PROMETHEUS_PORT=str(worker_port)
        )
    )
    prometheus = None
    try:
        prometheus = Prometheus({"web": f"127.0.0.1:{web_port}", "worker": f"127.0.0.1:{worker_port}"})
        _demo_load(f"http://127.0.0.1:{web_port}", committed, prometheus)
        with django_db_blocker.unblock():
            _wait(
                "the demo runs to finish",
                lambda: not WorkflowRun.objects.filter(status__in=ACTIVE_RUN_STATUSES).exists(),
            )
            runs = WorkflowRun.objects.count()
        _wait(
            "Prometheus to scrape every finished run, and no active one",
            lambda: (
                sum(float(r["value"][1]) for r in prometheus.query("workflow_runs_total")) == runs
                and sum(float(r["value"][1]) for r in prometheus.query("workflows_active")) == 0
            ),
        )
        yield prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        for proc in (worker, web):
            if proc.proc.poll() is None:
                proc.stop()
            else:
                print(proc.name, proc.output()[-4000:])


def _demo_load(base: str, tokens: Tokens, prometheus: Prometheus) -> None:
    def trigger(slug: str, context: dict[str, Any] | None = None) -> str:
        status, run, _ = http(
            "POST", f"{base}/api/workflows/{slug}/trigger", token=tokens.trigger, body={"context": context or {}}
        )
        assert status == 202, run
        return str(run["id"])

    gated = [trigger("observed"), trigger("observed")]
    for _ in range(3):
        trigger("quick")
    for target in ("db.internal", "web.internal"):
        trigger("scan-and-notify", {"target": target})
    trigger("test-failure")
    status, body, _ = http("POST", f"{base}/api/runs/{trigger('slow')}/cancel", token=tokens.trigger)
    assert status == 200, body
    for name in ("grafana_firing.json", "alertmanager_firing.json"):
        http("POST", f"{base}/webhooks/grafana", body=json.loads((FIXTURES / name).read_text()))

    def pending() -> dict[str, int]:
        _, page, _ = http("GET", f"{base}/api/approvals?status=PENDING", token=tokens.approver)
        items = page["items"] if isinstance(page, dict) else page
        return {item["run_id"]: item["id"] for item in items if item["run_id"] in gated}

    requests = _wait("both approval requests", lambda: (found := pending()) and len(found) == 2 and found)
    approve, reject = requests[gated[0]], requests[gated[1]]
    # Both processes count the waiting runs in the database and report the same numbers.
    _wait(
        "both targets to report the waiting runs",
        lambda: (
            sorted(
                float(r["value"][1])
                for r in prometheus.query('workflows_active{workflow="observed",status="WAITING_APPROVAL"}')
            )
            == [2.0, 2.0]
        ),
    )
    assert http("POST", f"{base}/api/approvals/{approve}/approve", token=tokens.approver, body={})[0] == 200
    status, body, _ = http(
        "POST", f"{base}/api/approvals/{reject}/reject", token=tokens.approver, body={"comment": "not now"}
    )
    assert status == 200, body


def test_every_catalogue_metric_is_scraped_with_the_catalogue_labels(scraped: Prometheus) -> None:
    expected = {**CATALOGUE, **WEBHOOK}
    for name, labels in expected.items():
        series = scraped.series(name)
        assert series, f"{name} is not in Prometheus"
        for one in series:
            found = set(one) - AMBIENT
            # Prometheus drops labels whose value is empty: an agent step without an action.
            missing = {"action"} if name.startswith("agent_duration") and "action" not in one else set()
            assert found == labels - missing, (name, one)


def test_the_demo_load_shows_up_in_the_values(scraped: Prometheus) -> None:
    def value(expr: str) -> float:
        return sum(float(r["value"][1]) for r in scraped.query(expr))

    assert value('workflow_runs_total{workflow="quick",status="SUCCESS",trigger="api"}') == 3
    assert value('workflow_runs_total{workflow="test-failure",status="FAILED"}') == 1
    assert value('workflow_runs_total{workflow="observed",status="REJECTED"}') == 1
    assert value('workflow_runs_total{workflow="slow",status="CANCELLED"}') == 1
    assert value('agent_retries_total{agent_type="fail",reason="AgentError"}') == 2
    assert value('agent_errors_total{agent_type="flaky",error_type="AgentError"}') == 2
    assert value('workflow_approval_wait_time_seconds_count{workflow="observed",node="ship",decision="approved"}') == 1
    assert value('workflow_approval_wait_time_seconds_count{workflow="observed",node="ship",decision="rejected"}') == 1
    assert value("max by (workflow, status) (workflows_active)") == 0


def test_the_otel_metrics_share_the_web_tiers_metrics_endpoint(scraped: Prometheus) -> None:
    names = {r["metric"]["__name__"] for r in scraped.query('count by (__name__) ({job="web"})')}
    assert "workflows_active" in names
    assert "workflow_approval_wait_time_seconds_count" in names
    assert any(name.startswith("django_http_requests_") for name in names), sorted(names)


def test_no_metric_has_more_than_100_series(scraped: Prometheus) -> None:
    counts = {
        r["metric"]["__name__"]: int(r["value"][1]) for r in scraped.query('count by (__name__) ({__name__=~".+"})')
    }
    assert counts
    too_many = {name: n for name, n in counts.items() if n > 100}
    assert not too_many, too_many
