"""Prefect 3 driver: ``<peers venv>/bin/python -m bench.peers.prefect_run '{"chain_repeats": 10, ...}'``.

Starts ``prefect server start`` (API only, no UI) on a free loopback port with its database in a scratch
PostgreSQL database (PREFECT_API_DATABASE_CONNECTION_URL, asyncpg), then calls the flows in-process against
it: every flow and task run is recorded by the server, as in any Prefect 3 run, but no deployment or work pool
is involved (a ``serve()``/worker deployment polls for scheduled runs every few seconds and starts a process
per flow run, which would measure the poll interval rather than the engine). "Workers" for the 3-step
throughput are N processes each calling the flow in a loop, started and warmed up before the clock starts.
Prints one JSON object on its last line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.peers.stats import summary

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = os.environ.get("BENCH_PREFECT_PG", "postgresql://postgres@127.0.0.1:5432")
DB_NAME = "prefect_bench"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _psql(sql: str) -> None:
    subprocess.run(["psql", f"{PG_ADMIN}/postgres", "-qAtc", sql], check=True, capture_output=True)


def _server_env(home: Path, port: int) -> dict[str, str]:
    url = PG_ADMIN.replace("postgresql://", "postgresql+asyncpg://", 1)
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"{url}/{DB_NAME}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_TO_API_ENABLED": "true",
    }


def worker(params: dict[str, Any]) -> None:
    """One "worker" process: warm up, say ready, wait for "go" on stdin, run the flows, print latencies."""
    from bench.peers.prefect_flows import noop3

    noop3()
    print("ready", flush=True)
    sys.stdin.readline()
    latencies, finishes = [], []
    for _ in range(params["runs"]):
        started = time.time()
        noop3()  # returns once the flow run's final state is recorded by the server
        finished = time.time()
        latencies.append(finished - started)
        finishes.append(finished)
    print(json.dumps({"latencies": latencies, "last_finish": max(finishes)}), flush=True)


def throughput(runs: int, worker_counts: list[int], env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for count in worker_counts:
        share = [runs // count + (1 if i < runs % count else 0) for i in range(count)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.peers.prefect_run", "worker", json.dumps({"runs": n})],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in share
        ]
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"a Prefect worker failed to start: {line!r}")
        started = time.time()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = []
        for p in procs:
            stdout, _ = p.communicate(timeout=1800)
            reports.append(json.loads(stdout.strip().splitlines()[-1]))
        last = max(r["last_finish"] for r in reports)
        latencies = [x for r in reports for x in r["latencies"]]
        out[f"{count}_workers"] = {
            "runs": runs,
            "runs_per_second": runs / (last - started),
            "latency": summary(latencies),
            "note": "flow called in-process in each worker: no queue between trigger and start",
        }
    return out


def main(params: dict[str, Any]) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="bench-prefect-"))
    port = _free_port()
    env = _server_env(home, port)
    os.environ.update(env)  # before prefect is imported: its settings are read then
    import prefect

    _psql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    _psql(f'CREATE DATABASE "{DB_NAME}"')
    log = open(home / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server_started = time.monotonic()
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited with {server.returncode}; see {home / 'server.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    healthy = r.status == 200
            except OSError:
                healthy = False
            if healthy:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("prefect server did not become healthy in 120 s")
            time.sleep(0.25)
        server_ready = time.monotonic()
        result: dict[str, Any] = {
            "versions": {"prefect": prefect.__version__},
            "server": "prefect server start (API only), database PostgreSQL via asyncpg",
            "mode": "flows called in-process against the server",
        }
        sections = params.get("sections", ["chain", "throughput"])
        if "chain" in sections:
            from bench.peers.prefect_flows import chain40

            durations = []
            for _ in range(params["chain_repeats"] + 1):
                started = time.monotonic()
                chain40()
                durations.append(time.monotonic() - started)
            chain = summary(durations[1:])
            chain["per_step_overhead_ms"] = (chain["p50"] / 40 - 0.010) * 1000
            result["chain"] = chain
        result["server_startup_seconds"] = server_ready - server_started
        if "throughput" in sections:
            result["throughput"] = throughput(params["throughput_runs"], params["worker_counts"], env)
        return result
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        _psql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(json.loads(sys.argv[2]))
    else:
        print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
