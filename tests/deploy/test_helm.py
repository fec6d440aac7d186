"""deploy/helm/commandcenter, rendered by Helm's own template engine: the Helm v4 Go SDK that helm-python-sdk ships
in its wheel (`helm template` without the CLI). The upstream subcharts cannot be fetched here, so the chart's own
templates are rendered, and the values handed to the subcharts are checked against what those templates render
(names, ports, files) and, for Prometheus' scrape jobs, by promtool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.deploy.helpers import (
    DATASOURCE_UIDS,
    DEPLOY,
    PROVISIONING,
    ROOT,
    RUNBOOKS,
    alert_rules,
    grafana_expand,
    load_yaml,
    rendered_runbook,
)

COMPOSE: dict[str, Any] = load_yaml(DEPLOY / "docker-compose.yml")["services"]

CHART = DEPLOY / "helm" / "commandcenter"
TEMPLATES = CHART / "templates"
BACKENDS = {"postgresql", "opentelemetry-collector", "tempo", "loki", "prometheus", "grafana"}
RELEASE, NAMESPACE = "commandcenter", "operations"
REQUIRED = {"secrets": {"secretKey": "helm-test-secret-key", "webhookToken": "helm-test-webhook-token"}}

helm.disable_logging()  # the engine logs every symbolic link it follows


def render(values: dict[str, Any] | None = None, release: str = RELEASE) -> dict[str, list[dict[str, Any]]]:
    """The chart's objects by template file name, as `helm template RELEASE deploy/helm/commandcenter` renders them."""
    merged = json.loads(json.dumps(REQUIRED))
    for key, value in (values or {}).items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(merged, name=release, namespace=NAMESPACE)
    return {
        Path(path).name: [doc for doc in yaml.safe_load_all(text) if doc]
        for path, text in manifests.items()
        if path.endswith(".yaml")
    }


def objects(rendered: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for docs in rendered.values() for doc in docs}


@pytest.fixture(scope="module")
def chart() -> dict[tuple[str, str], dict[str, Any]]:
    return objects(render())


def values() -> dict[str, Any]:
    return load_yaml(CHART / "values.yaml")


def subchart_tpl(text: str, release: str = RELEASE) -> str:
    """What a subchart's `tpl` makes of the release-dependent parts of our values for it."""
    text = text.replace("{{ .Release.Name }}", release).replace("{{ .Release.Namespace }}", NAMESPACE)
    fullname = release if "commandcenter" in release else f"{release}-commandcenter"
    text = re.sub(r'\{\{ if contains "commandcenter" \.Release\.Name \}\}.*?\{\{ end \}\}', fullname, text)
    assert "{{" not in text, text
    return text


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [main] = deployment["spec"]["template"]["spec"]["containers"]
    return main


# --- The chart as Helm sees it ----------------------------------------------------------------------------------


def test_helm_renders_the_chart_and_lints_it_clean(chart: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert {kind for kind, _ in chart} == {"ConfigMap", "Secret", "Service", "Deployment", "Job"}
    report = helm.lint(str(CHART), REQUIRED)
    problems = [m for m in report["messages"] if m["severity"] >= 2 and "missing these dependencies" not in m["error"]]
    assert report["errors"] == [] and problems == [], report


def test_the_dependencies_are_pinned_by_a_chart_lock_that_helm_accepts(tmp_path: Path) -> None:
    chart_yaml = load_yaml(CHART / "Chart.yaml")
    lock = load_yaml(CHART / "Chart.lock")
    assert {dep.get("alias", dep["name"]) for dep in chart_yaml["dependencies"]} == BACKENDS
    assert [(d["name"], d["version"]) for d in lock["dependencies"]] == [
        (d["name"], d["version"]) for d in chart_yaml["dependencies"]
    ]
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", d["version"]) for d in lock["dependencies"])
    for dep in chart_yaml["dependencies"]:
        assert dep["condition"] == f"{dep.get('alias', dep['name'])}.enabled"
        assert isinstance(values()[dep.get("alias", dep["name"])]["enabled"], bool)
    copy = tmp_path / "commandcenter"
    shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("files"))
    # Helm checks the lock's digest against Chart.yaml before it fetches anything; here the fetch fails (no
    # repository is reachable), after the digest was accepted.
    with pytest.raises(helm.HelmError) as accepted:
        helm.dependency_build(copy)
    assert "out of sync" not in str(accepted.value), accepted.value
    (copy / "Chart.yaml").write_text((copy / "Chart.yaml").read_text().replace('"10.5.15"', '"10.5.14"'))
    with pytest.raises(helm.HelmError, match="out of sync"):
        helm.dependency_build(copy)
    assert not (CHART / "charts").exists()


# --- Grafana ----------------------------------------------------------------------------------------------------


def test_grafana_listens_probes_and_is_served_on_3001() -> None:
    grafana = values()["grafana"]
    port = grafana["grafana.ini"]["server"]["http_port"]
    assert port == 3001 == int(COMPOSE["grafana"]["environment"]["GF_SERVER_HTTP_PORT"])
    assert grafana["service"]["targetPort"] == port, "the subchart's container port is service.targetPort"
    assert grafana["service"]["port"] == port
    for probe in ("readinessProbe", "livenessProbe"):
        assert grafana[probe]["httpGet"] == {"path": "/api/health", "port": port}, probe


def test_the_files_grafana_and_prometheus_load_are_the_compose_stack_s_own(
    chart: dict[tuple[str, str], dict[str, Any]],
) -> None:
    links = {"grafana": DEPLOY / "grafana", "prometheus-rules": DEPLOY / "prometheus" / "rules", "runbooks": RUNBOOKS}
    for name, target in links.items():
        link = CHART / "files" / name
        assert link.is_symlink() and link.resolve() == target.resolve(), f"files/{name} must link, not copy"
    expected = {
        f"{RELEASE}-cc-grafana-datasources": {"datasources.yaml": PROVISIONING / "datasources" / "datasources.yaml"},
        f"{RELEASE}-cc-grafana-alerting": {p.name: p for p in (PROVISIONING / "alerting").glob("*.yaml")},
        f"{RELEASE}-cc-grafana-dashboard-provider": {
            "dashboards.yaml": PROVISIONING / "dashboards" / "dashboards.yaml"
        },
        f"{RELEASE}-cc-grafana-dashboards": {p.name: p for p in (DEPLOY / "grafana" / "dashboards").glob("*.json")},
        f"{RELEASE}-cc-runbooks": {p.name: p for p in RUNBOOKS.glob("*.md")},
        f"{RELEASE}-prometheus-rules": {p.name: p for p in (DEPLOY / "prometheus" / "rules").glob("*.yml")},
    }
    for name, files in expected.items():
        data = chart[("ConfigMap", name)]["data"]
        assert set(data) == set(files), name
        for key, path in files.items():
            assert data[key].strip() == path.read_text().strip(), f"{name}/{key} differs from {path}"


def test_grafana_mounts_them_where_the_compose_stack_does(chart: dict[tuple[str, str], dict[str, Any]]) -> None:
    mounts = {subchart_tpl(m["configMap"]): m["mountPath"] for m in values()["grafana"]["extraConfigmapMounts"]}
    compose = {
        volume.split(":")[1]: volume.split(":")[0] for volume in COMPOSE["grafana"]["volumes"] if volume.startswith(".")
    }
    assert compose == {
        "/etc/grafana/provisioning": "./grafana/provisioning",
        "/etc/grafana/dashboards": "./grafana/dashboards",
        "/usr/share/grafana/public/commandcenter/deploy/runbooks": "./runbooks",
    }
    assert mounts == {
        f"{RELEASE}-cc-grafana-datasources": "/etc/grafana/provisioning/datasources",
        f"{RELEASE}-cc-grafana-alerting": "/etc/grafana/provisioning/alerting",
        f"{RELEASE}-cc-grafana-dashboard-provider": "/etc/grafana/provisioning/dashboards",
        f"{RELEASE}-cc-grafana-dashboards": "/etc/grafana/dashboards",
        f"{RELEASE}-cc-runbooks": "/usr/share/grafana/public/commandcenter/deploy/runbooks",
    }
    for name in mounts:
        assert ("ConfigMap", name) in chart, name
    provider = load_yaml(PROVISIONING / "dashboards" / "dashboards.yaml")["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/dashboards" and provider["folder"] == "CommandCenter"


def grafana_environment(chart: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    """Grafana's environment in the cluster: our ConfigMap (envFromConfigMaps), the token's Secret reference."""
    grafana = values()["grafana"]
    [source] = grafana["envFromConfigMaps"]
    env = dict(chart[("ConfigMap", subchart_tpl(source["name"]))]["data"])
    reference = grafana["envValueFrom"]["WEBHOOK_TOKEN"]["secretKeyRef"]
    secret = chart[("Secret", subchart_tpl(reference["name"]))]
    env["WEBHOOK_TOKEN"] = secret["stringData"][reference["key"]]
    return env


def test_grafana_links_the_same_datasources_and_calls_the_service_s_webhook(
    chart: dict[tuple[str, str], dict[str, Any]],
) -> None:
    env = grafana_environment(chart)
    datasources = {s["uid"]: s for s in load_yaml(PROVISIONING / "datasources" / "datasources.yaml")["datasources"]}
    assert set(datasources) == DATASOURCE_UIDS
    assert {uid: grafana_expand(source["url"], env) for uid, source in datasources.items()} == {
        "prometheus": f"http://{RELEASE}-prometheus-server",
        "tempo": f"http://{RELEASE}-tempo:3200",
        "loki": f"http://{RELEASE}-loki-gateway",
    }
    contact = load_yaml(PROVISIONING / "alerting" / "contact-points.yaml")["contactPoints"][0]["receivers"][0]
    service = chart[("Service", f"{RELEASE}-web")]
    assert grafana_expand(contact["settings"]["url"], env) == (
        f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/webhooks/grafana"
    )
    assert grafana_expand(contact["settings"]["authorization_credentials"], env) == "helm-test-webhook-token"
    config = chart[("ConfigMap", f"{RELEASE}-config")]["data"]
    for uid in ("PROMETHEUS", "TEMPO", "LOKI"):
        assert config[f"GRAFANA_{uid}_UID"] in datasources


def test_every_alert_notification_links_a_runbook_grafana_serves(chart: dict[tuple[str, str], dict[str, Any]]) -> None:
    config = chart[("ConfigMap", f"{RELEASE}-config")]["data"]
    base = config["RUNBOOK_BASE_URL"]
    assert base == grafana_environment(chart)["RUNBOOK_BASE_URL"] == f"{config['GRAFANA_URL']}/public/commandcenter"
    served = {m["mountPath"] for m in values()["grafana"]["extraConfigmapMounts"]}
    grafana_rules = {
        r["title"]: r for g in load_yaml(PROVISIONING / "alerting" / "rules.yaml")["groups"] for r in g["rules"]
    }
    for rule in alert_rules():
        expanded = grafana_expand(
            grafana_rules[rule["alert"]]["annotations"]["runbook_url"], grafana_environment(chart)
        )
        for annotation in (rule["annotations"]["runbook_url"], expanded):
            link = rendered_runbook(annotation, base)
            assert link.startswith("https://"), f"{rule['alert']}: relative runbook link {link!r}"
            path = link.removeprefix(f"{config['GRAFANA_URL']}/public/")
            assert f"/usr/share/grafana/public/{Path(path).parent}" in served, link
            assert (RUNBOOKS / Path(path).name).is_file(), link
    elsewhere = objects(render({"config": {"RUNBOOK_BASE_URL": "https://git.example.test/ops/cc/blob/main"}}))
    assert elsewhere[("ConfigMap", f"{RELEASE}-config")]["data"]["RUNBOOK_BASE_URL"] == (
        "https://git.example.test/ops/cc/blob/main"
    )


# --- Prometheus -------------------------------------------------------------------------------------------------


def test_prometheus_loads_the_chart_s_rules_and_scrapes_each_web_pod(
    chart: dict[tuple[str, str], dict[str, Any]],
) -> None:
    prometheus = values()["prometheus"]
    [mount] = prometheus["server"]["extraConfigmapMounts"]
    assert ("ConfigMap", mount["configMap"]) in chart, "the rules ConfigMap (named for the release `commandcenter`)"
    assert f"{mount['mountPath']}/*.yml" in prometheus["serverFiles"]["prometheus.yml"]["rule_files"]
    assert prometheus["server"]["global"]["scrape_interval"] == "15s"
    # Debian's promtool is built without Kubernetes service discovery, so the job is checked here by its parts.
    jobs = yaml.safe_load(subchart_tpl(prometheus["extraScrapeConfigs"]))
    web = {job["job_name"]: job for job in jobs}["orchestration-service"]
    assert [sd["role"] for sd in web["kubernetes_sd_configs"]] == ["pod"], "one target per pod, not the Service"
    keep = web["relabel_configs"][0]
    pod = chart[("Deployment", f"{RELEASE}-web")]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    port = container(chart[("Deployment", f"{RELEASE}-web")])["ports"][0]["name"]
    meta = {
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": labels["app.kubernetes.io/name"],
        "__meta_kubernetes_pod_label_app_kubernetes_io_instance": labels["app.kubernetes.io/instance"],
        "__meta_kubernetes_pod_label_app_kubernetes_io_component": labels["app.kubernetes.io/component"],
        "__meta_kubernetes_pod_container_port_name": port,
    }
    assert keep["action"] == "keep"
    assert re.fullmatch(keep["regex"], ";".join(meta[label] for label in keep["source_labels"]))
    worker_labels = chart[("Deployment", f"{RELEASE}-worker")]["spec"]["template"]["metadata"]["labels"]
    assert not re.fullmatch(
        keep["regex"],
        ";".join(
            {
                **meta,
                **{
                    "__meta_kubernetes_pod_label_app_kubernetes_io_component": worker_labels[
                        "app.kubernetes.io/component"
                    ]
                },
            }[label]
            for label in keep["source_labels"]
        ),
    )
    assert web["relabel_configs"][1] == {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "instance"}
    assert web["kubernetes_sd_configs"][0]["namespaces"]["names"] == [NAMESPACE]
    collector = {job["job_name"]: job for job in jobs}["otel-collector"]
    assert collector["honor_labels"] is True
    assert collector["static_configs"][0]["targets"] == [f"{RELEASE}-opentelemetry-collector:8889"]


def test_the_pod_monitor_for_an_operator_selects_each_web_pod_as_the_service_job() -> None:
    monitor = objects(render({"podMonitor": {"enabled": True}}))[("PodMonitor", f"{RELEASE}-web")]
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "web"
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": "orchestration-service"} in endpoint["relabelings"]


# --- The service's processes ------------------------------------------------------------------------------------


def test_every_environment_variable_of_the_chart_is_one_the_service_reads(
    chart: dict[tuple[str, str], dict[str, Any]],
) -> None:
    names = set(chart[("ConfigMap", f"{RELEASE}-config")]["data"])
    names |= set(chart[("Secret", f"{RELEASE}-secrets")]["stringData"])
    names |= {item["name"] for item in container(chart[("Deployment", f"{RELEASE}-worker")]).get("env", [])}
    known = set()
    for path in [*(ROOT / "config").glob("*.py"), ROOT / "observability" / "otel.py"]:
        text = path.read_text()
        known |= set(re.findall(r"\benv[a-z]*\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
        known |= set(re.findall(r"environ(?:\.get|\.setdefault)?[\(\[]\s*\"([A-Z][A-Z0-9_]+)\"", text))
    known |= set(re.findall(r"^#?\s*(OTEL_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert {"SECRET_KEY", "DATABASE_URL", "WEBHOOK_TOKEN", "RUNBOOK_BASE_URL", "WORKER_HEARTBEAT_FILE"} <= names
    assert names - known == set()


def test_secrets_stay_in_the_secret(chart: dict[tuple[str, str], dict[str, Any]]) -> None:
    config = chart[("ConfigMap", f"{RELEASE}-config")]["data"]
    for name in ("SECRET_KEY", "DATABASE_URL", "WEBHOOK_TOKEN"):
        assert name in chart[("Secret", f"{RELEASE}-secrets")]["stringData"] and name not in config
    existing = objects(render({"secrets": {"existingSecret": "ops-secrets", "secretKey": ""}}))
    assert ("Secret", f"{RELEASE}-secrets") not in existing
    web = container(existing[("Deployment", f"{RELEASE}-web")])
    assert {"secretRef": {"name": "ops-secrets"}} in web["envFrom"]


def test_the_processes_run_what_the_compose_stack_runs_with_the_same_telemetry(
    chart: dict[tuple[str, str], dict[str, Any]],
) -> None:
    web = container(chart[("Deployment", f"{RELEASE}-web")])
    config = chart[("ConfigMap", f"{RELEASE}-config")]["data"]
    assert web["command"] == ["gunicorn", "config.wsgi:application", "-c", "config/gunicorn.py"]
    assert config["GUNICORN_BIND"] == "0.0.0.0:9002" and web["ports"][0]["containerPort"] == 9002
    assert web["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert web["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container(chart[("Deployment", f"{RELEASE}-worker")])["command"] == COMPOSE["worker"]["command"]
    migrate = chart[("Job", f"{RELEASE}-migrate")]
    assert container({"spec": migrate["spec"]})["command"] == COMPOSE["migrate"]["command"]
    assert migrate["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    compose_env = COMPOSE["web"]["environment"]
    for name in ("OTEL_SERVICE_NAME", "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        assert config[name] == str(compose_env[name]), name


def test_every_object_is_named_after_the_release() -> None:
    for release in ("commandcenter", "ops"):
        prefix = release if release == "commandcenter" else f"{release}-"
        for kind, name in objects(render(release=release)):
            assert name.startswith(prefix), (release, kind, name)


# --- Worker liveness and autoscaling ---------------------------------------------------------------------------


def test_workers_scale_on_the_queue_with_keda_when_asked_and_never_on_cpu(
    chart: dict[tuple[str, str], dict[str, Any]],
) -> None:
    assert not any(kind == "HorizontalPodAutoscaler" for kind, _ in chart)
    assert chart[("Deployment", f"{RELEASE}-worker")]["spec"]["replicas"] == values()["worker"]["replicas"]
    scaled = objects(render({"worker": {"autoscaling": {**values()["worker"]["autoscaling"], "enabled": True}}}))
    scaler = scaled[("ScaledObject", f"{RELEASE}-worker")]
    assert "replicas" not in scaled[("Deployment", f"{RELEASE}-worker")]["spec"], "KEDA owns the replica count"
    assert scaler["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-worker"
    [trigger] = scaler["spec"]["triggers"]
    assert trigger["type"] == "postgresql" and trigger["metadata"]["connectionFromEnv"] == "DATABASE_URL"
    assert "DATABASE_URL" in chart[("Secret", f"{RELEASE}-secrets")]["stringData"]


@pytest.mark.django_db
def test_the_queue_depth_query_counts_the_tasks_ready_now_and_running() -> None:
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    from workflows.tasks import execute_step

    scaled = objects(render({"worker": {"autoscaling": {**values()["worker"]["autoscaling"], "enabled": True}}}))
    query = scaled[("ScaledObject", f"{RELEASE}-worker")]["spec"]["triggers"][0]["metadata"]["query"]
    ready = [execute_step.enqueue(i) for i in range(3)]
    execute_step.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(99)  # a retry not due yet
    DBTaskResult.objects.filter(id=ready[0].id).update(status="RUNNING")
    DBTaskResult.objects.filter(id=ready[1].id).update(status="SUCCESSFUL")
    with connection.cursor() as cursor:
        cursor.execute(query)
        assert cursor.fetchone() == (2,)  # one ready, one running; not the finished one, not the deferred one


@pytest.fixture
def heartbeat_worker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    from tests.observability.procs import service_env, start_worker

    env = service_env(WORKER_HEARTBEAT_FILE=str(tmp_path / "heartbeat"), RUNNER_REAPER_INTERVAL="0.5")
    worker = start_worker(env)
    yield worker.proc, env
    os.kill(worker.proc.pid, signal.SIGCONT)
    worker.stop()


@pytest.mark.slow
@pytest.mark.django_db
def test_the_worker_s_liveness_probe_follows_its_heartbeat(
    heartbeat_worker: tuple[subprocess.Popen[bytes], dict[str, str]],
) -> None:
    worker, env = heartbeat_worker
    probe = objects(
        render({"worker": {"livenessProbe": {**values()["worker"]["livenessProbe"], "maxHeartbeatAgeSeconds": 2}}})
    )
    command = container(probe[("Deployment", f"{RELEASE}-worker")])["livenessProbe"]["exec"]["command"]
    assert command == ["python", "-m", "workflows.heartbeat", "2"]
    run = [sys.executable, *command[1:]]

    def probed() -> subprocess.CompletedProcess[str]:
        return subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)

    deadline = time.monotonic() + 20
    while probed().returncode != 0:
        assert worker.poll() is None and time.monotonic() < deadline, "the worker never reported a heartbeat"
        time.sleep(0.2)
    time.sleep(2.5)
    assert probed().returncode == 0, "a live worker renews its heartbeat"
    os.kill(worker.pid, signal.SIGSTOP)  # a worker that no longer runs, as a deadlock would leave it
    time.sleep(2.5)
    stuck = probed()
    assert stuck.returncode == 1 and "stuck" in stuck.stderr, stuck


def test_the_chart_refuses_to_render_without_a_webhook_token() -> None:
    """The service refuses to start with an unauthenticated alert webhook, so the chart asks for the token."""
    with pytest.raises(Exception, match=r"secrets\.webhookToken is required"):
        render({"secrets": {"webhookToken": ""}})
    existing = objects(render({"secrets": {"existingSecret": "ops-secrets", "secretKey": "", "webhookToken": ""}}))
    assert ("Secret", f"{RELEASE}-secrets") not in existing
