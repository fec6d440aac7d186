"""The compose stack and the backends' configs parse, and their ports, uids, names and endpoints line up."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.deploy.helpers import DEPLOY, PROVISIONING, ROOT, compose_default, grafana_expand, load_yaml

COMPOSE = load_yaml(DEPLOY / "docker-compose.yml")
SERVICES: dict[str, Any] = COMPOSE["services"]
COLLECTOR = load_yaml(DEPLOY / "otel-collector" / "config.yaml")
TEMPO = load_yaml(DEPLOY / "tempo" / "tempo.yaml")
LOKI = load_yaml(DEPLOY / "loki" / "loki.yaml")
PROMETHEUS = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
DATASOURCES = {
    source["uid"]: source for source in load_yaml(PROVISIONING / "datasources" / "datasources.yaml")["datasources"]
}
ONE_SHOT = {"migrate"}


def host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"tcp://{url}")
    assert parsed.hostname and parsed.port, url
    return parsed.hostname, parsed.port


def app_env(service: str = "web") -> dict[str, str]:
    return {key: str(value) for key, value in SERVICES[service]["environment"].items()}


def grafana_env() -> dict[str, str]:
    """The grafana container's environment with compose's defaults."""
    return {key: compose_default(str(value)) for key, value in SERVICES["grafana"]["environment"].items()}


def datasource_url(uid: str) -> str:
    return grafana_expand(DATASOURCES[uid]["url"], grafana_env())


def test_the_stack_has_every_service_of_the_design() -> None:
    assert set(SERVICES) == {
        "postgres",
        "migrate",
        "web",
        "worker",
        "otel-collector",
        "tempo",
        "prometheus",
        "loki",
        "grafana",
    }


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned_to_a_version(name: str) -> None:
    image = SERVICES[name]["image"]
    repository, _, tag = image.rpartition(":")
    assert repository and tag and tag != "latest"
    if name not in {"migrate", "web", "worker"}:
        assert re.match(r"v?\d+\.\d+", tag), image


def test_the_app_processes_run_the_documented_commands_from_one_image() -> None:
    for name in ("migrate", "web", "worker"):
        assert SERVICES[name]["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert SERVICES[name]["image"] == "commandcenter:local"
    assert " ".join(SERVICES["web"]["command"]) == (
        "gunicorn config.wsgi:application -c config/gunicorn.py --bind 0.0.0.0:9002"
    )
    assert SERVICES["worker"]["command"] == ["python", "manage.py", "worker"]
    assert SERVICES["migrate"]["command"][-1] == "python manage.py migrate --noinput && python manage.py sync_workflows"
    assert SERVICES["migrate"]["restart"] == "no"
    for name in ("web", "worker"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "replicas" in SERVICES["worker"]["deploy"]


def test_published_ports() -> None:
    assert "9002:9002" in SERVICES["web"]["ports"]
    assert "3001:3001" in SERVICES["grafana"]["ports"]
    assert SERVICES["grafana"]["environment"]["GF_SERVER_HTTP_PORT"] == "3001"


def test_state_lives_in_named_volumes() -> None:
    for name, path in {
        "postgres": "/var/lib/postgresql/data",
        "prometheus": "/prometheus",
        "tempo": "/var/tempo",
        "loki": "/loki",
        "grafana": "/var/lib/grafana",
    }.items():
        volume = f"{name}-data"
        assert volume in COMPOSE["volumes"]
        assert f"{volume}:{path}" in SERVICES[name]["volumes"]


def test_retention_is_30_days_for_metrics_and_7_days_for_traces_and_logs() -> None:
    assert "--storage.tsdb.retention.time=30d" in SERVICES["prometheus"]["command"]
    assert TEMPO["compactor"]["compaction"]["block_retention"] == "168h"
    assert LOKI["limits_config"]["retention_period"] == "168h"
    assert LOKI["compactor"]["retention_enabled"] is True


def test_the_app_sends_otlp_to_the_collector_which_listens_on_4317_and_4318() -> None:
    env = app_env()
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert env["OTEL_SERVICE_NAME"] == "orchestration-service"
    assert app_env("worker") == env
    protocols = COLLECTOR["receivers"]["otlp"]["protocols"]
    assert host_port(protocols["grpc"]["endpoint"])[1] == 4317
    assert host_port(protocols["http"]["endpoint"])[1] == 4318


def test_the_collector_pipelines_limit_memory_first_batch_last_and_export_each_signal() -> None:
    pipelines = COLLECTOR["service"]["pipelines"]
    for signal, exporter in {"traces": "otlp/tempo", "metrics": "prometheus", "logs": "otlphttp/loki"}.items():
        pipeline = pipelines[signal]
        assert pipeline["receivers"] == ["otlp"]
        assert pipeline["processors"][0] == "memory_limiter"
        assert pipeline["processors"][-1] == "batch"
        assert "resource" in pipeline["processors"]
        assert pipeline["exporters"] == [exporter]
        for component in pipeline["processors"]:
            assert component in COLLECTOR["processors"]
    assert "loki" not in COLLECTOR["exporters"], "the old loki exporter no longer exists"


def test_collector_exporters_point_at_the_backends_where_they_listen() -> None:
    exporters = COLLECTOR["exporters"]
    tempo_host, tempo_port = host_port(exporters["otlp/tempo"]["endpoint"])
    assert (
        tempo_host == "tempo"
        and tempo_port == host_port(TEMPO["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])[1]
    )
    assert exporters["otlphttp/loki"]["endpoint"] == f"http://loki:{LOKI['server']['http_listen_port']}/otlp"
    exporter_port = host_port(exporters["prometheus"]["endpoint"])[1]
    scrape = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    assert scrape["otel-collector-exporter"]["static_configs"][0]["targets"] == [f"otel-collector:{exporter_port}"]
    assert scrape["otel-collector-exporter"]["honor_labels"] is True
    telemetry = COLLECTOR["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
    assert scrape["otel-collector"]["static_configs"][0]["targets"] == [f"otel-collector:{telemetry['port']}"]


def test_prometheus_scrapes_the_app_as_orchestration_service_and_every_backend_on_its_port() -> None:
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in PROMETHEUS["scrape_configs"]}
    assert targets["orchestration-service"] == ["web:9002"]
    assert targets["tempo"] == [f"tempo:{TEMPO['server']['http_listen_port']}"]
    assert targets["loki"] == [f"loki:{LOKI['server']['http_listen_port']}"]
    assert targets["grafana"] == [f"grafana:{SERVICES['grafana']['environment']['GF_SERVER_HTTP_PORT']}"]
    for job, hosts in targets.items():
        for target in hosts:
            host = host_port(target)[0]
            assert host == "localhost" or host in SERVICES, f"{job} scrapes unknown host {host}"
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in SERVICES["prometheus"]["volumes"]


def test_tempo_s_metrics_generator_writes_to_prometheus_which_accepts_remote_write() -> None:
    assert TEMPO["overrides"]["defaults"]["metrics_generator"]["processors"] == ["service-graphs", "span-metrics"]
    remote = TEMPO["metrics_generator"]["storage"]["remote_write"][0]["url"]
    assert remote == "http://prometheus:9090/api/v1/write"
    assert "--web.enable-remote-write-receiver" in SERVICES["prometheus"]["command"]


def test_loki_accepts_otlp_with_structured_metadata() -> None:
    assert LOKI["limits_config"]["allow_structured_metadata"] is True
    assert LOKI["schema_config"]["configs"][-1]["schema"] == "v13"
    assert LOKI["schema_config"]["configs"][-1]["store"] == "tsdb"


def test_datasources_reach_the_backends_and_link_traces_logs_and_metrics() -> None:
    assert datasource_url("prometheus") == "http://prometheus:9090"
    assert datasource_url("tempo") == f"http://tempo:{TEMPO['server']['http_listen_port']}"
    assert datasource_url("loki") == f"http://loki:{LOKI['server']['http_listen_port']}"
    tempo = DATASOURCES["tempo"]["jsonData"]
    assert tempo["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert "trace_id=" in tempo["tracesToLogsV2"]["query"]
    assert tempo["serviceMap"]["datasourceUid"] == "prometheus"
    derived = DATASOURCES["loki"]["jsonData"]["derivedFields"][0]
    assert (derived["datasourceUid"], derived["matcherRegex"]) == ("tempo", "trace_id")
    destinations = DATASOURCES["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert {destination["datasourceUid"] for destination in destinations} == {"tempo"}
    assert "--enable-feature=exemplar-storage" in SERVICES["prometheus"]["command"]


def test_the_app_s_deep_link_settings_match_the_provisioned_uids() -> None:
    env = app_env()
    assert env["GRAFANA_PROMETHEUS_UID"] in DATASOURCES
    assert env["GRAFANA_TEMPO_UID"] in DATASOURCES
    assert env["GRAFANA_LOKI_UID"] in DATASOURCES
    assert env["GRAFANA_WORKFLOW_DASHBOARD_UID"] == "workflow-overview"
    assert compose_default(env["GRAFANA_URL"]) == "http://localhost:3001"
    settings = (ROOT / "config" / "settings.py").read_text()
    for name, uid in {
        "GRAFANA_PROMETHEUS_UID": "prometheus",
        "GRAFANA_TEMPO_UID": "tempo",
        "GRAFANA_LOKI_UID": "loki",
        "GRAFANA_WORKFLOW_DASHBOARD_UID": "workflow-overview",
    }.items():
        assert f'envstr("{name}", "{uid}")' in settings, f"the service's default for {name} is not {uid}"


def test_grafana_calls_the_service_webhook_with_the_token_the_service_expects() -> None:
    contact = load_yaml(PROVISIONING / "alerting" / "contact-points.yaml")["contactPoints"][0]
    settings = contact["receivers"][0]["settings"]
    url = grafana_expand(settings["url"], grafana_env())
    host, port = host_port(url)
    assert (host, port, urlparse(url).path) == ("web", 9002, "/webhooks/grafana")
    assert settings["authorization_scheme"] == "Bearer"
    assert settings["authorization_credentials"] == "$WEBHOOK_TOKEN"
    assert SERVICES["grafana"]["environment"]["WEBHOOK_TOKEN"] == app_env()["WEBHOOK_TOKEN"]
    assert "web" in app_env()["ALLOWED_HOSTS"].split(",")
    policy = load_yaml(PROVISIONING / "alerting" / "policies.yaml")["policies"][0]
    assert policy["receiver"] == contact["name"]


def test_the_dockerfile_is_multi_stage_non_root_and_runs_gunicorn_on_9002() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, flags=re.MULTILINE)) >= 2
    assert re.search(r"^USER app$", dockerfile, flags=re.MULTILINE)
    assert "-c constraints.txt" in dockerfile
    assert (
        'CMD ["gunicorn", "config.wsgi:application", "-c", "config/gunicorn.py", "--bind", "0.0.0.0:9002"]'
        in dockerfile
    )
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var"} <= set(ignored)


def test_metrics_are_pushed_every_scrape_interval_so_that_rate_interval_spans_four_exports() -> None:
    from observability.otel import METRIC_EXPORT_INTERVAL_MS

    scrape = int(PROMETHEUS["global"]["scrape_interval"].removesuffix("s"))
    # Grafana's $__rate_interval is at least four times the datasource's scrape interval.
    assert DATASOURCES["prometheus"]["jsonData"]["timeInterval"] == f"{scrape}s"
    rate_interval = 4 * scrape
    export = int(app_env()["OTEL_METRIC_EXPORT_INTERVAL"]) / 1000
    assert export == METRIC_EXPORT_INTERVAL_MS / 1000 == scrape
    assert rate_interval / export >= 4, "every rate window holds four pushed samples"
    assert "every 15 s" in (ROOT / "README.md").read_text()
