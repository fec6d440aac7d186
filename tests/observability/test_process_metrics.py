"""Every process on the production path reports its memory, CPU and open file descriptors over OTLP, under the
names that the System Health dashboard and the HighMemoryUsage alert query once the Collector has made Prometheus
series of them (job from service.name, instance from service.instance.id).

The processes are the real ones: gunicorn with config/gunicorn.py, started from a bare environment as it would be
outside the image (no DJANGO_SETTINGS_MODULE), and `manage.py worker`, both exporting to the in-process OTLP
receiver.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from observability.otel import DEFAULT_SERVICE_NAME
from tests.deploy.helpers import PROVISIONING, alert_rules, dashboard_queries, dashboards, load_yaml, metric_names
from tests.observability import procs
from tests.observability.procs import PYTHON, Process, free_port, service_env, start_worker, wait_http
from tests.observability.receiver import Point, Receiver

pytestmark = [pytest.mark.django_db]

WORKERS = 2


def process_series_queried() -> set[str]:
    """The process_* series that the dashboards, the Prometheus alerts and Grafana's copies of them select."""
    exprs = [expr for dashboard in dashboards().values() for _, expr in dashboard_queries(dashboard)]
    exprs += [rule["expr"] for rule in alert_rules()]
    for group in load_yaml(PROVISIONING / "alerting" / "rules.yaml")["groups"]:
        exprs += [
            query["model"]["expr"] for rule in group["rules"] for query in rule["data"] if "expr" in query["model"]
        ]
    return {name for expr in exprs for name in metric_names(expr) if name.startswith("process_")}


def test_the_dashboards_and_the_memory_alert_query_process_memory_cpu_and_open_files() -> None:
    assert process_series_queried() == {
        "process_memory_usage_bytes",
        "process_cpu_time_seconds_total",
        "process_open_file_descriptor_count",
    }
    memory = next(rule for rule in alert_rules() if rule["alert"] == "HighMemoryUsage")
    assert metric_names(memory["expr"]) == {"process_memory_usage_bytes"}


def series_by_instance(receiver: Receiver) -> dict[str, dict[str, Point]]:
    """instance (service.instance.id) -> Prometheus series name -> the latest point, for the process metrics."""
    found: dict[str, dict[str, Point]] = {}
    for point in receiver.points():
        if point.metric.startswith("process."):
            found.setdefault(str(point.resource.get("service.instance.id")), {})[point.prometheus_name] = point
    return found


def assert_reports_itself(points: dict[str, Point], pid: int) -> None:
    """The series the dashboards read, with this process's own numbers and the labels Prometheus gets."""
    assert process_series_queried() <= set(points), sorted(points)
    for point in points.values():
        assert point.resource["service.name"] == DEFAULT_SERVICE_NAME  # -> job="orchestration-service"
        assert point.resource["service.instance.id"] == f"{socket.gethostname()}:{pid}"  # -> instance
    memory = points["process_memory_usage_bytes"]
    assert memory.kind == "sum" and not memory.monotonic  # a gauge in Prometheus, no _total
    assert 10 * 2**20 < memory.value < psutil.Process(pid).memory_info().rss * 2
    assert points["process_cpu_time_seconds_total"].monotonic
    assert {p.attributes.get("type") for p in [points["process_cpu_time_seconds_total"]]} <= {"user", "system"}
    assert points["process_open_file_descriptor_count"].value >= 3


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.mark.slow
def test_gunicorn_boots_with_telemetry_from_a_bare_environment_and_each_worker_reports_its_resources(
    receiver: Receiver, tmp_path: Path
) -> None:
    port = free_port()
    # What an operator sets to run the service outside the image; no DJANGO_SETTINGS_MODULE, no DEBUG.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": procs.test_database_url(),
        "SECRET_KEY": "bare-environment-secret-key-for-the-gunicorn-boot-test",
        # Outside DEBUG the service refuses to start with an unauthenticated alert webhook.
        "WEBHOOK_TOKEN": "bare-environment-webhook-token",
        "ALLOWED_HOSTS": "127.0.0.1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(WORKERS),
        "VAR_DIR": str(tmp_path),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    gunicorn = Process("gunicorn", [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"], env)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", gunicorn)
        workers = {child.pid for child in psutil.Process(gunicorn.proc.pid).children()}
        assert len(workers) == WORKERS
        instances = {f"{socket.gethostname()}:{pid}": pid for pid in workers}

        def every_worker_reported() -> bool:
            found = series_by_instance(receiver)
            return all(process_series_queried() <= set(found.get(instance, {})) for instance in instances)

        receiver.wait_for("the process metrics of every gunicorn worker", every_worker_reported, timeout=30)
        found = series_by_instance(receiver)
        # Each worker reports itself; the master, which never sets telemetry up, reports nothing.
        assert set(found) == set(instances), (set(found), instances)
        for instance, pid in instances.items():
            assert_reports_itself(found[instance], pid)
    except BaseException:
        print(gunicorn.output()[-5000:])
        raise
    finally:
        gunicorn.stop()


@pytest.mark.slow
def test_a_worker_reports_its_memory_cpu_and_open_files(receiver: Receiver) -> None:
    env = service_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint, OTEL_METRIC_EXPORT_INTERVAL="500")
    worker = start_worker(env)
    try:
        instance = f"{socket.gethostname()}:{worker.proc.pid}"

        def reported() -> bool:
            return process_series_queried() <= set(series_by_instance(receiver).get(instance, {}))

        receiver.wait_for("the worker's process metrics", reported, timeout=30)
        assert_reports_itself(series_by_instance(receiver)[instance], worker.proc.pid)
    except BaseException:
        print(worker.output()[-5000:])
        raise
    finally:
        worker.stop()


@pytest.mark.parametrize(("configured", "expected"), [(None, 15_000.0), ("500", 500.0)])
def test_metrics_are_exported_every_15_seconds_unless_the_environment_says_otherwise(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver, configured: str | None, expected: float
) -> None:
    from opentelemetry.sdk.resources import Resource

    from observability.otel import _meter_provider

    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"{receiver.http_endpoint}/v1/metrics")
    if configured is None:
        monkeypatch.delenv("OTEL_METRIC_EXPORT_INTERVAL", raising=False)
    else:
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", configured)
    provider = _meter_provider(Resource.create({}))
    try:
        [reader] = provider._metric_readers
        assert reader._export_interval_millis == expected
    finally:
        provider.shutdown()
