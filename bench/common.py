"""Shared plumbing: a scratch database, worker processes, percentiles, RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from bench.peers.stats import percentile, summary

__all__ = ["percentile", "summary"]  # re-exported for the workload modules

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/commandcenter_bench"


def database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)


def sibling_database_url(kind: str) -> str:
    """The bench database's URL with its name changed for a peer's own database: ``commandcenter_bench`` ->
    ``commandcenter_<kind>_bench`` (still ending in ``_bench``, so only scratch databases are ever dropped)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(database_url())
    name = parts.path.lstrip("/").removesuffix("_bench")
    return urlunsplit(parts._replace(scheme="postgresql", path=f"/{name}_{kind}_bench"))


def commits_read(url: str | None = None) -> Callable[[], int]:
    """Reads ``xact_commit`` of the bench database (or of ``url``'s), through a connection to ``postgres``."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from bench.peers.pgstat import xact_commit

    url = url or database_url()
    admin, name = make_conninfo(url, dbname="postgres"), str(conninfo_to_dict(url)["dbname"])
    return lambda: xact_commit(admin, name)


def recreate_database(url: str) -> None:
    """Drops and creates the scratch database named in ``url`` (never the one the service uses)."""
    import dj_database_url

    cfg = dj_database_url.parse(url)
    name = cfg["NAME"]
    if not name.endswith("_bench"):
        raise SystemExit(f"refusing to recreate {name!r}: the benchmark database name must end in _bench")
    with psycopg.connect(
        host=cfg["HOST"] or "127.0.0.1",
        port=cfg["PORT"] or 5432,
        user=cfg["USER"] or "postgres",
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def service_env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "SECRET_KEY": "benchmark-only-secret-key",
        "WEBHOOK_TOKEN": "benchmark-only-webhook-token",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
    }
    env.update(extra)
    return env


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


@contextmanager
def workers(count: int, env: dict[str, str], log_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    for i in range(count):
        log = open(log_dir / f"worker-{i}.log", "wb")  # noqa: SIM115 - lives as long as the process
        procs.append(
            subprocess.Popen(
                [PYTHON, "manage.py", "worker", "--worker-id", f"bench-{i}"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        wait_until(lambda: all(b"started" in (log_dir / f"worker-{i}.log").read_bytes() for i in range(count)), 60)
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached in time")
        time.sleep(step)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> dict[str, Any]:
    import platform

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pg = "unknown"
    try:
        with psycopg.connect(database_url().replace("postgres://", "postgresql://"), connect_timeout=3) as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    except psycopg.Error:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "postgresql": pg,
        "kernel": platform.release(),
    }
