"""The database's commit capacity on this machine (pgbench) against the commits our runs need.

``pgbench -i`` fills a scratch database (``commandcenter_pgbench_bench``, dropped afterwards), then the default
TPC-B-like script (three UPDATEs, one SELECT, one INSERT per transaction) runs with ``-c 4 -j 2`` for a fixed
time: its tps is what this PostgreSQL commits under a write-heavy load, with synchronous_commit as configured.

Our side: the commits a noop-3 run costs, counted as the throughput section counts them
(``bench.ours.noop3_batch``; bench/peers/pgstat.py says how and what else commits in the window).
The fraction reported is (commits per run x runs/s) / pgbench tps.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from bench.common import database_url


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
    from bench.ours import noop3_batch

    batch = noop3_batch(env, log_dir, runs, worker_count)
    return {
        "workflow": "noop-3",
        "runs": runs,
        "workers": worker_count,
        "seconds": batch["seconds"],
        "runs_per_second": batch["runs_per_second"],
        "commits_total": batch["commits"]["total"],
        "commits_idle_same_time": batch["commits"]["idle_workers_same_time"],
        "commits_per_run": batch["commits"]["per_run"],
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
