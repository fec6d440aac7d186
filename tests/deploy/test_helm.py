"""deploy/helm/commandcenter, checked statically: no helm binary renders it here (and no Python package renders
Go templates with Helm's functions), so the tests parse Chart.yaml and values.yaml, resolve every
`.Values` reference of the templates, and compare names, ports, probes and commands with the compose file
and the settings the service reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.helpers import DATASOURCE_UIDS, DEPLOY, ROOT, load_yaml

CHART = DEPLOY / "helm" / "commandcenter"
TEMPLATES = CHART / "templates"
BACKENDS = {"postgresql", "opentelemetry-collector", "tempo", "loki", "prometheus", "grafana"}


def _values() -> dict[str, Any]:
    return load_yaml(CHART / "values.yaml")


def _chart() -> dict[str, Any]:
    return load_yaml(CHART / "Chart.yaml")


def _compose() -> dict[str, Any]:
    return load_yaml(DEPLOY / "docker-compose.yml")


def _templates() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(TEMPLATES.iterdir()) if path.is_file()}


def _lookup(values: dict[str, Any], path: list[str]) -> bool:
    node: Any = values
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def test_chart_and_values_parse() -> None:
    chart = _chart()
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "commandcenter"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert isinstance(_values(), dict)


def test_every_backend_is_an_upstream_dependency_with_a_condition_the_values_define() -> None:
    values = _values()
    dependencies = {dep.get("alias", dep["name"]): dep for dep in _chart()["dependencies"]}
    assert set(dependencies) == BACKENDS
    for name, dep in dependencies.items():
        assert dep["repository"].startswith("https://"), name
        assert dep["version"], name
        assert dep["condition"] == f"{name}.enabled", name
        assert isinstance(values[name]["enabled"], bool), name
    assert not list(TEMPLATES.glob("*statefulset*")), "backends come from their charts, not hand-written"


def test_every_values_reference_in_the_templates_exists_in_values_yaml() -> None:
    values = _values()
    missing = []
    for name, text in _templates().items():
        for match in re.finditer(r"\$?\.Values((?:\.[A-Za-z_][\w-]*)+)", text):
            path = match.group(1).lstrip(".").split(".")
            if not _lookup(values, path):
                missing.append(f"{name}: .Values.{'.'.join(path)}")
    assert missing == []


def test_templates_have_balanced_actions_and_blocks() -> None:
    for name, text in _templates().items():
        assert text.count("{{") == text.count("}}"), name
        actions = re.findall(r"\{\{-?\s*(\w+)", text)
        opened = sum(action in {"if", "range", "with", "define"} for action in actions)
        assert opened == actions.count("end"), name


def _names_the_service_reads() -> set[str]:
    names = set()
    for path in [*(ROOT / "config").glob("*.py"), ROOT / "observability" / "otel.py"]:
        text = path.read_text()
        names |= set(re.findall(r"\benv[a-z]*\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
        names |= set(re.findall(r"environ(?:\.get|\.setdefault)?[\(\[]\s*\"([A-Z][A-Z0-9_]+)\"", text))
        names |= set(re.findall(r"getenv\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
    # The OpenTelemetry SDK reads the standard OTEL_* variables itself; .env.example lists the ones we set.
    example = (ROOT / ".env.example").read_text()
    names |= set(re.findall(r"^#?\s*(OTEL_[A-Z0-9_]+)=", example, re.MULTILINE))
    return names


def _env_names_of_the_chart() -> set[str]:
    names = set(_values()["config"])
    for name in ("configmap.yaml", "secret.yaml"):
        names |= set(re.findall(r"^\s{2}([A-Z][A-Z0-9_]+):", _templates()[name], re.MULTILINE))
    names |= {item["name"] for item in _values()["extraEnv"]}
    return names


def test_every_environment_variable_of_the_chart_is_one_the_service_reads() -> None:
    known = _names_the_service_reads()
    names = _env_names_of_the_chart()
    assert {"SECRET_KEY", "DATABASE_URL", "WEBHOOK_TOKEN", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= names
    assert names - known == set()


def test_secrets_are_in_the_secret_and_not_in_the_config_map() -> None:
    secret = _templates()["secret.yaml"]
    for name in ("SECRET_KEY", "DATABASE_URL", "WEBHOOK_TOKEN"):
        assert re.search(rf"^\s+{name}:", secret, re.MULTILINE), name
        assert name not in _values()["config"], name
        assert name not in _templates()["configmap.yaml"], name
    assert "existingSecret" in secret
    assert _values()["secrets"]["existingSecret"] == ""


def test_the_web_tier_matches_the_compose_file_ports_probes_and_command() -> None:
    compose = _compose()["services"]
    values = _values()
    web = _templates()["web-deployment.yaml"]
    assert compose["web"]["ports"] == [f"{values['web']['port']}:{values['web']['port']}"]
    assert values["web"]["port"] == values["service"]["port"] == 9002
    assert f"0.0.0.0:{values['web']['port']}" in compose["web"]["command"]
    assert "config/gunicorn.py" in compose["web"]["command"] and "config/gunicorn.py" in web
    assert re.search(r"livenessProbe:\s+httpGet:\s+path: /healthz", web)
    assert re.search(r"readinessProbe:\s+httpGet:\s+path: /readyz", web)
    assert "/readyz" in " ".join(compose["web"]["healthcheck"]["test"])
    # gunicorn binds where the probes and the Service look
    assert 'GUNICORN_BIND: {{ printf "0.0.0.0:%v" .Values.web.port | quote }}' in _templates()["configmap.yaml"]


def test_the_worker_and_the_migration_run_what_the_compose_file_runs() -> None:
    compose = _compose()["services"]
    worker = _templates()["worker-deployment.yaml"]
    migrate = _templates()["migrate-job.yaml"]
    assert f"command: {_flow(compose['worker']['command'])}" in worker
    assert f"command: {_flow(compose['migrate']['command'])}" in migrate
    assert "kind: HorizontalPodAutoscaler" in _templates()["worker-hpa.yaml"]
    assert _values()["worker"]["autoscaling"]["enabled"] is True


def _flow(command: list[str]) -> str:
    return "[" + ", ".join(f'"{part}"' for part in command) + "]"


def test_the_migration_is_a_helm_hook_before_install_and_upgrade() -> None:
    migrate = _templates()["migrate-job.yaml"]
    helpers = _templates()["_helpers.tpl"]
    assert 'helm.sh/hook: {{ include "commandcenter.migrateHooks" . }}' in migrate
    assert "pre-install,pre-upgrade" in helpers
    # with the bundled PostgreSQL the database exists only after install: the hook then runs post-install
    assert "post-install,pre-upgrade" in helpers
    # the settings the hook needs exist before it when it runs pre-install
    for name in ("configmap.yaml", "secret.yaml"):
        assert "helm.sh/hook: pre-install,pre-upgrade" in _templates()[name], name


def test_optional_objects_are_behind_their_switches() -> None:
    templates = _templates()
    assert templates["ingress.yaml"].startswith("{{- if .Values.ingress.enabled }}")
    assert templates["servicemonitor.yaml"].count("{{- if .Values.serviceMonitor.enabled }}") == 1
    assert _values()["ingress"]["enabled"] is False
    assert _values()["serviceMonitor"]["enabled"] is False


def test_the_backends_are_wired_like_the_compose_stack() -> None:
    values = _values()
    compose = _compose()
    app_env = compose["x-app"]["environment"]
    assert values["telemetry"]["serviceName"] == app_env["OTEL_SERVICE_NAME"]
    for uid in ("PROMETHEUS", "TEMPO", "LOKI"):
        assert values["config"][f"GRAFANA_{uid}_UID"] == app_env[f"GRAFANA_{uid}_UID"]
    datasources = values["grafana"]["datasources"]["datasources.yaml"]["datasources"]
    assert {source["uid"] for source in datasources} == DATASOURCE_UIDS
    assert (
        values["grafana"]["service"]["port"]
        == 3001
        == int(compose["services"]["grafana"]["environment"]["GF_SERVER_HTTP_PORT"])
    )
    assert "--storage.tsdb.retention.time=30d" in compose["services"]["prometheus"]["command"]
    assert values["prometheus"]["server"]["retention"] == "30d"
    scrape = load_yaml_text(values["prometheus"]["extraScrapeConfigs"])
    jobs = {job["job_name"]: job for job in scrape}
    assert jobs["orchestration-service"]["static_configs"][0]["targets"] == [
        f"commandcenter-web:{values['web']['port']}"
    ]
    assert jobs["otel-collector"]["honor_labels"] is True
    collector = values["opentelemetry-collector"]["config"]
    assert set(collector["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert collector["exporters"]["otlphttp/loki"]["endpoint"].endswith("/otlp")
    assert "4317" in _templates()["_helpers.tpl"]


def load_yaml_text(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


@pytest.mark.parametrize("name", sorted(path.name for path in TEMPLATES.glob("*.yaml")))
def test_every_object_template_names_itself_after_the_release(name: str) -> None:
    text = (TEMPLATES / name).read_text()
    assert 'name: {{ include "commandcenter.fullname" . }}' in text or "commandcenter.secretName" in text


def test_the_chart_has_no_rendered_dependencies_committed() -> None:
    assert not (CHART / "charts").exists() or not any((CHART / "charts").iterdir())
    assert not Path(CHART / "Chart.lock").exists() or "dependencies" in (CHART / "Chart.lock").read_text()
