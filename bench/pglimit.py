"""The database's commit capacity on this machine (pgbench) against the commits our runs need.

``pgbench -i`` fills a scratch database (``commandcenter_pgbench_bench``, dropped afterwards), then the default
TPC-B-like script (three UPDATEs, one SELECT, one INSERT per transaction) runs with ``-c 4 -j 2`` for a fixed
time: its tps is what this PostgreSQL commits under a write-heavy load, with synchronous_commit as configured.

Our side: ``xact_commit`` of the bench database in pg_stat_database before and after a batch of noop-3 runs
(workers started before the "before" reading and stopped before the "after" one, so their statistics are
flushed), minus the commits of the same workers idle for as long (measured over up to 10 s and scaled),
divided by the runs. Django runs in autocommit mode, so every read-only statement outside a transaction is a
commit here too: this is an upper bound of the write commits.
The fraction reported is (commits per run x runs/s) / pgbench tps.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import database_url, workers


def _conninfo(url: str) -> dict[str, Any]:
    import dj_database_url

    cfg = dj_database_url.parse(url)
    return {
        "host": cfg["HOST"] or "127.0.0.1",
        "port": int(cfg["PORT"] or 5432),
        "user": cfg["USER"] or "postgres",
        "dbname": cfg["NAME"],
        "password": cfg.get("PASSWORD") or "",
    }


def xact_commit(url: str) -> int:
    info = _conninfo(url)
    with psycopg.connect(
        host=info["host"], port=info["port"], user=info["user"], password=info["password"] or None, dbname="postgres"
    ) as conn:
        conn.autocommit = True
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (info["dbname"],)).fetchone()
    return int(row[0]) if row else 0


def pgbench(seconds: int, clients: int = 4, threads: int = 2, scale: int = 10) -> dict[str, Any]:
    info = _conninfo(database_url())
    name = "commandcenter_pgbench_bench"
    with psycopg.connect(
        host=info["host"], port=info["port"], user=info["user"], password=info["password"] or None, dbname="postgres"
    ) as conn:
        conn.autocommit = True
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    args = ["-h", info["host"], "-p", str(info["port"]), "-U", info["user"]]
    env = {"PGPASSWORD": info["password"]} if info["password"] else {}
    env = {**os.environ, **env}
    try:
        subprocess.run(["pgbench", *args, "-i", "-q", "-s", str(scale), name], env=env, check=True, capture_output=True)
        out = subprocess.run(
            ["pgbench", *args, "-c", str(clients), "-j", str(threads), "-T", str(seconds), "-n", name],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        with psycopg.connect(
            host=info["host"],
            port=info["port"],
            user=info["user"],
            password=info["password"] or None,
            dbname="postgres",
        ) as conn:
            conn.autocommit = True
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    latency = re.search(r"latency average = ([\d.]+) ms", out)
    if tps is None:
        raise RuntimeError(f"could not read pgbench's tps from:\n{out}")
    return {
        "script": "tpcb-like (builtin)",
        "scale": scale,
        "clients": clients,
        "threads": threads,
        "seconds": seconds,
        "tps": float(tps.group(1)),
        "latency_avg_ms": float(latency.group(1)) if latency else None,
        "load_1m": os.getloadavg()[0],
    }


def commits_per_run(env: dict[str, str], log_dir: Path, runs: int, worker_count: int = 2) -> dict[str, Any]:
    from bench.ours import _models, _wait_terminal

    _, _, Workflow, _, trigger = _models()
    workflow = Workflow.objects.get(slug="noop-3")
    url = database_url()
    from django.db import connection

    connection.close()  # the driver's own idle connection holds no unflushed statistics after this
    time.sleep(1.2)
    before = xact_commit(url)
    with workers(worker_count, env, log_dir):
        started = time.monotonic()
        ids = [trigger(workflow, context={"i": i})[0].id for i in range(runs)]
        _wait_terminal(ids, 600)
        elapsed = time.monotonic() - started
        connection.close()
    time.sleep(1.2)
    after = xact_commit(url)
    # The same workers idle (up to 10 s, scaled to the batch's time): starting, polling and stopping cost too.
    window = min(elapsed, 10.0)
    with workers(worker_count, env, log_dir):
        time.sleep(window)
    time.sleep(1.2)
    idle = (xact_commit(url) - after) * elapsed / window
    commits = after - before - idle
    return {
        "workflow": "noop-3",
        "runs": runs,
        "workers": worker_count,
        "seconds": elapsed,
        "runs_per_second": runs / elapsed,
        "commits_total": after - before,
        "commits_idle_same_time": round(idle, 1),
        "commits_per_run": commits / runs,
    }


def limit(env: dict[str, str], log_dir: Path, *, runs: int, pgbench_seconds: int) -> dict[str, Any]:
    ours = commits_per_run(env, log_dir, runs)
    bench = pgbench(pgbench_seconds)
    used = ours["commits_per_run"] * ours["runs_per_second"]
    return {
        "ours": ours,
        "pgbench": bench,
        "commits_per_second_used": used,
        "fraction_of_pgbench_tps": used / bench["tps"],
        "runs_per_second_at_pgbench_tps": bench["tps"] / ours["commits_per_run"] if ours["commits_per_run"] else None,
    }
