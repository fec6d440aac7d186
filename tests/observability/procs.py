"""Starting the service's own processes (gunicorn, runserver, the worker) against the test database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from tests.children import kill_group, popen

ROOT = Path(settings.BASE_DIR)
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    """DATABASE_URL of the database pytest-django created (``test_<name>``), for the subprocesses."""
    db = connection.settings_dict
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def service_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMETHEUS_MULTIPROC", "GUNICORN"))}
    env.update(
        DEBUG="1",
        DATABASE_URL=test_database_url(),
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
        WORKER_POLL_INTERVAL="0.2",
        RUNNER_REAPER_INTERVAL="1",
    )
    env.update(extra)
    return env


class Process:
    """A child process whose output goes to a file, shown when a test needs it."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], *, stderr_apart: bool = False) -> None:
        self.name = name
        self.env = env
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.err = (
            tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".err", delete=False)  # noqa: SIM115
            if stderr_apart
            else None
        )
        # Its own process group, killed when the test run dies (tests/children.py).
        self.proc = popen(args, cwd=ROOT, env=env, stdout=self.log, stderr=self.err or subprocess.STDOUT)

    def output(self) -> str:
        """stdout, with stderr in it unless the process was started with ``stderr_apart``."""
        return Path(self.log.name).read_text(errors="replace")

    def errors(self) -> str:
        """stderr of a process started with ``stderr_apart``."""
        assert self.err is not None, f"{self.name} was started with stderr merged into stdout"
        return Path(self.err.name).read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> float:
        """SIGTERM, then wait; returns how long the process took to exit. Anything it started and left running
        (its process group) is killed afterwards."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_group(self.proc)
                self.proc.wait()
                raise AssertionError(
                    f"{self.name} did not stop within {timeout:g}s:\n{self.output()[-3000:]}"
                ) from None
        took = time.monotonic() - started
        kill_group(self.proc)
        return took

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()[-5000:]}")


def start_gunicorn(port: int, env: dict[str, str], workers: int = 2) -> Process:
    env = {
        **env,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="prom-multiproc-"),
    }
    proc = Process("gunicorn", [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"], env)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    return proc


def start_runserver(port: int, env: dict[str, str], *, stderr_apart: bool = False) -> Process:
    args = [PYTHON, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload", "--skip-checks"]
    proc = Process("runserver", args, env, stderr_apart=stderr_apart)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    return proc


def start_worker(env: dict[str, str], *, stderr_apart: bool = False) -> Process:
    return Process("worker", [PYTHON, "manage.py", "worker", "--interval", "0.2"], env, stderr_apart=stderr_apart)


def wait_http(url: str, proc: Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - a local test URL
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise AssertionError(f"{proc.name} did not answer {url} within {timeout:g}s:\n{proc.output()[-3000:]}")


def http(
    method: str, url: str, *, token: str = "", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, float]:
    """(status, decoded JSON or text, seconds taken)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    took = time.monotonic() - started
    try:
        return status, json.loads(raw), took
    except ValueError:
        return status, raw.decode(errors="replace"), took
