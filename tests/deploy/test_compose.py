"""deploy/docker-compose.yml as Docker Compose v2 reads it: valid against the Compose Specification's JSON schema,
healthchecks that can run inside their pinned images, dependencies that can be met, and runbook links that open.

The schema is the one check-jsonschema vendors (``--builtin-schema vendor.compose-spec``, with its licence), the
JSON schema of the compose-spec project that Compose v2 validates against; Compose v1 (Python docker-compose
1.29, as Debian packages it) used an older schema and rejects the top-level ``name``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import (
    DEPLOY,
    DISTROLESS_IMAGES,
    PROVISIONING,
    RUNBOOKS,
    alert_rules,
    compose_default,
    grafana_expand,
    load_yaml,
    rendered_runbook,
)

COMPOSE_FILE = DEPLOY / "docker-compose.yml"
COMPOSE = load_yaml(COMPOSE_FILE)
SERVICES: dict[str, Any] = COMPOSE["services"]


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert binary, "check-jsonschema is a dev dependency (pyproject.toml)"
    return subprocess.run(
        [binary, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_compose_file_is_valid_against_the_compose_specification_schema() -> None:
    result = check_jsonschema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_what_compose_would_reject(tmp_path: Path) -> None:
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["web"]["depends_on"]["migrate"]["condition"] = "service_ready"  # no such condition
    broken["services"]["tempo"]["healthcheck"] = {"test": ["CMD", "true"], "intervall": "10s"}  # misspelt key
    (tmp_path / "compose.yml").write_text(yaml.safe_dump(broken))
    result = check_jsonschema(tmp_path / "compose.yml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "service_ready" in result.stdout and "intervall" in result.stdout


def test_the_file_says_which_compose_it_needs() -> None:
    assert "name" in COMPOSE, "the project name is set in the file (Compose v2)"
    text = COMPOSE_FILE.read_text()
    assert "Docker Compose v2" in text and "1.29" in text
    assert "Docker Compose v2" in (DEPLOY / "README.md").read_text()


def repository(image: str) -> str:
    return image.rpartition(":")[0]


def shell_form(test: Any) -> bool:
    """Whether a healthcheck needs a shell: a string, CMD-SHELL, or CMD of sh/wget/curl."""
    if isinstance(test, str):
        return True
    kind, *command = test
    return kind == "CMD-SHELL" or (kind == "CMD" and Path(command[0]).name in {"sh", "bash", "wget", "curl"})


def healthcheck_problems(services: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in services.items():
        check = service.get("healthcheck")
        if check is None or check.get("disable"):
            continue
        own_binary = DISTROLESS_IMAGES.get(repository(service.get("image", "")), "")
        if own_binary == "":  # not a distroless image
            continue
        if own_binary is None:
            problems.append(f"{name}: {service['image']} has nothing to run a healthcheck with")
        elif shell_form(check["test"]) or check["test"][1] != own_binary:
            problems.append(f"{name}: {service['image']} can only run {own_binary}, not {check['test']}")
    for name, service in services.items():
        for dependency, how in (service.get("depends_on") or {}).items():
            if how.get("condition") == "service_healthy" and "healthcheck" not in services[dependency]:
                problems.append(f"{name} waits for {dependency} to be healthy, which has no healthcheck")
    return problems


def test_every_healthcheck_can_run_in_its_image_and_every_dependency_can_be_met() -> None:
    assert healthcheck_problems(SERVICES) == []
    for name in ("otel-collector", "tempo", "loki"):
        assert repository(SERVICES[name]["image"]) in DISTROLESS_IMAGES, name
        assert "healthcheck" not in SERVICES[name], name
    for name in ("postgres", "web", "worker", "prometheus", "grafana"):
        assert "healthcheck" in SERVICES[name], name


@pytest.mark.parametrize(
    "test",
    [
        ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:3200/ready || exit 1"],
        ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3200/ready"],
        "wget -q -O /dev/null http://127.0.0.1:3200/ready",
    ],
)
def test_a_shell_or_wget_check_on_a_distroless_image_is_refused(test: Any) -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    services["tempo"]["healthcheck"] = {"test": test}
    assert healthcheck_problems(services) == [
        f"tempo: {services['tempo']['image']} has nothing to run a healthcheck with"
    ]


def test_waiting_for_a_service_without_a_healthcheck_is_refused() -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    services["grafana"]["depends_on"]["tempo"]["condition"] = "service_healthy"
    assert healthcheck_problems(services) == ["grafana waits for tempo to be healthy, which has no healthcheck"]


# --- Runbook links --------------------------------------------------------------------------------------------


def app_env() -> dict[str, str]:
    return {key: compose_default(str(value)) for key, value in SERVICES["web"]["environment"].items()}


def grafana_env() -> dict[str, str]:
    return {key: compose_default(str(value)) for key, value in SERVICES["grafana"]["environment"].items()}


def grafana_rule_annotations() -> dict[str, dict[str, str]]:
    groups = load_yaml(PROVISIONING / "alerting" / "rules.yaml")["groups"]
    return {rule["title"]: rule["annotations"] for group in groups for rule in group["rules"]}


def served_runbook(url: str) -> Path:
    """The file Grafana serves at ``url``: its public/ directory holds deploy/runbooks (compose volume)."""
    grafana = compose_default(str(SERVICES["web"]["environment"]["GRAFANA_URL"]))
    assert url.startswith(f"{grafana}/public/"), url
    public = url.removeprefix(f"{grafana}/public/")
    for volume in SERVICES["grafana"]["volumes"]:
        source, _, target = volume.removesuffix(":ro").partition(":")
        prefix = target.removeprefix("/usr/share/grafana/public/") + "/"
        if target.startswith("/usr/share/grafana/public/") and public.startswith(prefix):
            return (DEPLOY / source / public.removeprefix(prefix)).resolve()
    raise AssertionError(f"Grafana serves nothing at {url}")


def test_every_alert_notification_links_a_runbook_that_opens() -> None:
    base = app_env()["RUNBOOK_BASE_URL"]
    assert base == grafana_env()["RUNBOOK_BASE_URL"], "the service and Grafana link the same runbooks"
    grafana = grafana_rule_annotations()
    for rule in alert_rules():
        # Through Alertmanager (the Prometheus rule) and through Grafana (its copy, expanded by Grafana).
        for annotation in (
            rule["annotations"]["runbook_url"],
            grafana_expand(grafana[rule["alert"]]["runbook_url"], grafana_env()),
        ):
            link = rendered_runbook(annotation, base)
            assert link.startswith(("http://", "https://")), f"{rule['alert']}: relative runbook link {link!r}"
            page = served_runbook(link)
            assert page.is_file() and page.parent == RUNBOOKS.resolve(), (rule["alert"], link)


def test_without_a_runbook_base_the_links_would_be_relative() -> None:
    rule = alert_rules()[0]
    assert "://" not in rendered_runbook(rule["annotations"]["runbook_url"], "")
    assert "://" not in grafana_expand(grafana_rule_annotations()[rule["alert"]]["runbook_url"], {})
