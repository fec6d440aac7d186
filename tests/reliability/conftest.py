"""Fault-injection helpers: real worker processes, a throwaway PostgreSQL cluster, and result recording.

RELIABILITY_SCALE=large (or scripts/faults.py --large) runs the bigger soak; the default fits CI. Each
scenario writes what it measured to var/reliability/<scenario>.json, which scripts/faults.py turns into the
table of docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from tests.children import kill_group, popen

ROOT = Path(settings.BASE_DIR)
LARGE = os.environ.get("RELIABILITY_SCALE", "").lower() == "large"
RESULTS_DIR = Path(os.environ.get("RELIABILITY_RESULTS_DIR") or ROOT / "var" / "reliability")


def _pg_bin() -> Path:
    """PostgreSQL's server binaries: $PG_BIN, else the newest Debian-style install, else pg_config's."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if installed:
        return installed[-1]
    found = shutil.which("pg_config")
    if found:
        return Path(subprocess.run([found, "--bindir"], capture_output=True, text=True).stdout.strip())
    return Path("/usr/lib/postgresql/bin")


PG_BIN = _pg_bin()


def scaled[T](small: T, large: T) -> T:
    return large if LARGE else small


def database_url(settings_dict: dict[str, Any] | None = None) -> str:
    s = settings_dict or connection.settings_dict
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def host_id(pid: int) -> str:
    """The id a worker process writes into lease and attempt rows (runner.worker_id())."""
    return f"{socket.gethostname()}:{pid}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> float:
    """Waits until ``condition()`` holds; returns how long it took. Fails naming ``what`` after ``timeout``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(interval)
    return time.monotonic() - start


def record_result(scenario: str, **figures: Any) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    figures = {"scenario": scenario, "scale": "large" if LARGE else "ci", "recorded_at": time.time(), **figures}
    (RESULTS_DIR / f"{scenario}.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")


# Worker processes ---------------------------------------------------------------------------------------

# What every spawned process gets: quiet text logs and no telemetry. Runner, pool and retry settings stay at
# their defaults (the pool is on outside pytest) unless a scenario names them.
BASE_ENV = {
    "DEBUG": "1",
    "OTEL_SDK_DISABLED": "true",
    "LOG_LEVEL": "warning",
    "LOG_FORMAT": "text",
}

# Shortened timers for the scenarios that measure how fast a fault is noticed rather than what it does to
# outcomes (the SIGTERM hand-back). Scenarios about outcomes run on BASE_ENV.
WORKER_ENV = {
    **BASE_ENV,
    "DATABASE_POOL": "0",
    "RUNNER_LEASE_SECONDS": "2",
    "RUNNER_REAPER_INTERVAL": "0.3",
    "RUNNER_READY_GRACE_SECONDS": "3",
    "WORKER_POLL_INTERVAL": "0.2",
}


@dataclass
class Processes:
    """Starts `manage.py` subprocesses with logs under ``logs``; kills what is left at the end."""

    logs: Path
    url: str
    env: dict[str, str] = field(default_factory=lambda: dict(WORKER_ENV))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, args: list[str], name: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        # Its own process group, killed when the test run dies (tests/children.py).
        proc = popen(
            args,
            cwd=ROOT,
            env={**os.environ, **self.env, "DATABASE_URL": self.url, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def worker(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        """A worker named ``name``: the name is its id in leases, attempt rows and queue rows."""
        return self.start([sys.executable, "manage.py", "worker", "--worker-id", name], f"worker-{name}", **env)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                kill_group(proc)
        for proc in self.procs:
            proc.wait(15)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(logs=tmp_path, url=database_url())
    yield procs
    procs.stop_all()


@pytest.fixture
def default_processes(tmp_path: Path) -> Iterator[Processes]:
    """Processes with every runner, pool and retry setting at its default."""
    procs = Processes(logs=tmp_path, url=database_url(), env=dict(BASE_ENV))
    yield procs
    procs.stop_all()


# A throwaway PostgreSQL cluster that a test may stop and start -------------------------------------------


@dataclass
class PgCluster:
    """A private PostgreSQL cluster (never the shared server): initdb as the postgres user, on a free port."""

    directory: Path
    port: int
    owner: list[str]

    @classmethod
    def create(cls) -> PgCluster:
        assert (PG_BIN / "initdb").exists(), f"PostgreSQL server binaries not found in {PG_BIN} (install postgresql)"
        directory = Path(tempfile.mkdtemp(prefix="cc-pg-"))
        owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres")
            owner = ["runuser", "-u", "postgres", "--"]
        cluster = cls(directory=directory, port=free_port(), owner=owner)
        subprocess.run(
            [*owner, str(PG_BIN / "initdb"), "-D", str(directory / "data"), "-U", "postgres", "-A", "trust"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        cluster.start()
        return cluster

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/commandcenter"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.owner, str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", options, "-l", str(self.directory / "log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> float:
        """Stops the server (``fast`` or ``immediate``), keeps it down ``down_for`` seconds and starts it again;
        returns how long it did not accept connections."""
        started = time.monotonic()
        self.stop(mode)
        time.sleep(down_for)
        self.start()
        return time.monotonic() - started

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    """A throwaway cluster for the module, with an empty ``commandcenter`` database."""
    pg = PgCluster.create()
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE commandcenter")
        yield pg
    finally:
        pg.destroy()


def query(cluster: PgCluster, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Rows from the cluster's ``commandcenter`` database, on a connection of its own."""
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/commandcenter", connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


# The service on a throwaway cluster: schema, workflows, users, the web tier ---------------------------------

SETUP = """
import django, json, os
django.setup()
from django.core.management import call_command
from django.contrib.auth.models import Group, User
from accounts.models import ApiToken
call_command("migrate", verbosity=0)
for path in os.environ["DEFINITIONS"].split(os.pathsep):
    call_command("sync_workflows", path, verbosity=0)
operators = Group.objects.get(name="operators")
load = User.objects.create_user("load", is_staff=True)
load.groups.add(operators)
approver = User.objects.create_user("approver", is_staff=True)
approver.groups.add(operators)
print(json.dumps({
    "load": ApiToken.issue(load, name="tests", scopes=("trigger", "read"))[1],
    "approver": ApiToken.issue(approver, name="tests", scopes=("read", "approve"))[1],
}))
"""


def setup_database(cluster: PgCluster, *definitions: Path) -> dict[str, str]:
    """Migrates the cluster's database, syncs ``definitions`` (files or directories) and creates two users with
    API tokens: ``load`` (who triggers) and ``approver`` (an operator); returns their tokens by name."""
    result = subprocess.run(
        [sys.executable, "-c", SETUP],
        cwd=ROOT,
        env={
            **os.environ,
            **BASE_ENV,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": cluster.url,
            "DEFINITIONS": os.pathsep.join(str(d) for d in definitions),
        },
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tokens: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return tokens


PRODUCTION_WEB = {
    "DEBUG": "false",
    "SECRET_KEY": "outage-test-secret-key-outage-test-secret-key-0123456789",
    "WEBHOOK_TOKEN": "outage-test-webhook-token",
    "ALLOWED_HOSTS": "127.0.0.1",
    "LOG_LEVEL": "warning",
    "LOG_FORMAT": "text",
}


def start_web(processes: Processes, cluster: PgCluster, tmp_path: Path) -> str:
    """gunicorn with production settings and its defaults (2 processes x 4 threads); returns its base URL."""
    port = free_port()
    processes.start(
        [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi:application"],
        "web",
        DATABASE_URL=cluster.url,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
        OTEL_SDK_DISABLED="true",
        **PRODUCTION_WEB,
    )
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: http("GET", base + "/healthz", timeout=2)[0] == 200, 90, "gunicorn to answer")
    return base


def http(
    method: str,
    url: str,
    token: str = "",
    body: Any = None,
    timeout: float = 15,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """(status, body) of one request; status 0 when no answer came (refused, reset, timed out)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http://127.0.0.1 only
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our own local server
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"
