"""gunicorn's own lines (the master's and each worker's: starting, booting, signals, exiting) are written once
each on stdout in the service's log format, JSON or text as LOG_FORMAT says, and nothing goes to stderr."""

from __future__ import annotations

import re
import runpy
import subprocess
import tempfile
from collections import Counter

import pytest
from gunicorn.config import Config

from tests.observability.procs import PYTHON, ROOT, Process, free_port, http, service_env, wait_http
from tests.observability.test_log_streams import lines, strict_json

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

WORKERS = 2


def serve_once(log_format: str) -> Process:
    """gunicorn with config/gunicorn.py, stopped with SIGTERM after a probe and a 404; stderr kept apart."""
    port = free_port()
    env = service_env(
        LOG_FORMAT=log_format,
        OTEL_SDK_DISABLED="true",
        GUNICORN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY=str(WORKERS),
        PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(prefix="prom-multiproc-"),
    )
    web = Process(
        "gunicorn", [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"], env, stderr_apart=True
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", web)
        assert http("GET", f"http://127.0.0.1:{port}/nowhere")[0] == 404
    finally:
        web.stop()
    assert web.proc.returncode == 0, web.output()[-3000:]
    return web


def assert_gunicorn_said_each_once(messages: list[str]) -> None:
    """The master's start and stop and each worker's boot and exit, once each; pids are the workers'."""
    said = Counter(re.sub(r"\d+", "N", message) for message in messages)
    assert said["Starting gunicorn N.N.N"] == 1, messages
    assert said["Booting worker with pid: N"] == WORKERS, messages
    assert said["Worker exiting (pid: N)"] == WORKERS, messages
    assert said["Handling signal: term"] == 1, messages
    assert said["Shutting down: Master"] == 1, messages
    # No control socket unless GUNICORN_CONTROL_SOCKET names one: the default path is shared by every master.
    assert not [m for m in messages if "ontrol socket" in m], messages
    booted = {m.rsplit(" ", 1)[1] for m in messages if m.startswith("Booting worker")}
    exited = {m.rsplit(" ", 1)[1].rstrip(")") for m in messages if m.startswith("Worker exiting")}
    assert booted == exited and len(booted) == WORKERS, messages


def test_gunicorn_writes_its_own_lines_once_as_json_on_stdout_and_nothing_on_stderr() -> None:
    web = serve_once("json")

    records = [strict_json(line) for line in lines(web.output())]
    assert_gunicorn_said_each_once([r["message"] for r in records if r["logger"] == "gunicorn.error"])
    # Django's LOGGING, applied in each worker, still writes the app's lines once and leaves gunicorn's alone.
    assert [r["message"] for r in records if r["logger"] == "django.request"] == ["Not Found: /nowhere"]
    # No access log: gunicorn keeps it off, and no request line turns up under another logger.
    assert not [r for r in records if r["logger"].startswith("gunicorn.") and r["logger"] != "gunicorn.error"]
    assert not [r for r in records if "/healthz" in r["message"]], records
    assert web.errors() == ""


def test_gunicorn_writes_its_own_lines_once_as_text_on_stdout_when_the_format_is_text() -> None:
    web = serve_once("text")

    line = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>[\w.]+) (?P<message>.*)$")
    out = lines(web.output())
    parsed = [line.match(text) for text in out]
    assert all(parsed), [text for text, match in zip(out, parsed, strict=True) if not match]
    records = [match.groupdict() for match in parsed if match]
    assert_gunicorn_said_each_once([r["message"] for r in records if r["logger"] == "gunicorn.error"])
    assert [r["message"] for r in records if r["logger"] == "django.request"] == ["Not Found: /nowhere"]
    assert web.errors() == ""


def test_gunicorn_s_logging_set_up_in_the_master_loads_neither_django_settings_nor_telemetry() -> None:
    # What gunicorn does with the settings file in the master: run it, then apply logconfig_dict.
    script = """
import logging.config, runpy, sys, threading
logging.config.dictConfig(runpy.run_path("config/gunicorn.py")["logconfig_dict"])
logging.getLogger("gunicorn.error").info("Starting gunicorn")
print(" ".join(sorted(sys.modules)), threading.active_count(), file=sys.stderr)
"""
    env = service_env(LOG_FORMAT="json")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)

    assert strict_json(done.stdout)["logger"] == "gunicorn.error"
    *modules, threads = done.stderr.split()
    assert "observability.logs" in modules
    assert not [m for m in modules if m.startswith(("config.settings", "django.conf", "opentelemetry.sdk"))]
    assert "observability.otel" not in modules
    assert threads == "1"


@pytest.mark.parametrize(("accesslog", "enabled"), [(None, False), ("-", True)])
def test_gunicorn_builds_access_records_only_when_an_access_log_is_configured(
    accesslog: str | None, enabled: bool
) -> None:
    # logconfig_dict alone would make gunicorn build (and drop) an access record for every request.
    settings = runpy.run_path(str(ROOT / "config" / "gunicorn.py"))
    cfg = Config()
    cfg.set("logconfig_dict", settings["logconfig_dict"])
    cfg.set("logger_class", settings["logger_class"])
    cfg.set("accesslog", accesslog)
    logger = cfg.logger_class(cfg)

    assert logger.access_log_enabled is enabled
