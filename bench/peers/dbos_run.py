"""DBOS Transact driver: ``<peers venv>/bin/python -m bench.peers.dbos_run '{"chain_repeats": 10, ...}'``.

DBOS keeps its state in a PostgreSQL database of its own on the bench's server (``system_database_url``,
dropped and created anew, dropped again at the end). Runs go through its queue, as ours go through our task
queue: this process enqueues them by name with a ``DBOSClient`` (it runs no workflow code), and N worker
processes (``DBOS.launch()``, one executor id each) take them from the queue, polling it every
``polling_interval_sec`` (DBOS's default is 1 s; the bench sets it low and says so in the output).
``worker_concurrency`` is how many workflows one worker process runs at once (threads in the process); DBOS
sets no limit by default, so one process would take the whole queue and the other workers would idle.
DBOS's OpenTelemetry export is off (``enable_otlp`` false), as ours is for the rows it is compared with.

- chain: chain-40 enqueued, one worker, 1 + ``chain_repeats`` runs (the first warms up and is not counted);
  ``chain_inline`` is the same workflow called directly in a launched process, without the queue.
- throughput: ``throughput_runs`` noop-3 runs enqueued as fast as possible into 1, 2, 4 workers started
  beforehand; runs/s is runs / (first enqueue -> all finished, as the driver sees it), latency is each run's
  ``created_at`` -> ``completed_at`` (PostgreSQL's clock). Commits per run are counted on DBOS's database as
  ours are on ours (bench/peers/pgstat.py).

Completion is polled every 5 ms from a separate connection that rolls back, so the polling commits nothing.
Prints one JSON object with the results on its last line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.peers.pgstat import count_commits, xact_commit
from bench.peers.stats import summary

ROOT = Path(__file__).resolve().parents[2]
UNFINISHED = ("ENQUEUED", "PENDING", "DELAYED")


def _admin(url: str) -> str:
    return make_conninfo(url, dbname="postgres")


def _dbname(url: str) -> str:
    return str(conninfo_to_dict(url)["dbname"])


def _recreate(url: str, create: bool = True) -> None:
    name = _dbname(url)
    if not name.endswith("_bench"):
        raise SystemExit(f"refusing to recreate {name!r}: a benchmark database name must end in _bench")
    with psycopg.connect(_admin(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


def _config(url: str, executor_id: str) -> Any:
    from bench.peers.dbos_app import APP_NAME

    return {
        "name": APP_NAME,
        "system_database_url": url,
        "executor_id": executor_id,
        "enable_otlp": False,
        "run_admin_server": False,  # its HTTP port would collide between the workers
    }


def worker(params: dict[str, Any]) -> None:
    """One worker process: launch DBOS (which starts polling the queue), say ready, run until stdin closes."""
    from dbos import DBOS

    import bench.peers.dbos_app  # noqa: F401 - registers the workflows before launch

    DBOS(config=_config(params["url"], params["executor_id"]))
    DBOS.launch()
    print("ready", flush=True)
    os.dup2(2, 1)  # nobody reads the pipe from here on: whatever else comes out goes to the log, never blocks
    sys.stdin.read()
    DBOS.destroy(workflow_completion_timeout_sec=10)


def inline(params: dict[str, Any]) -> None:
    """chain-40 called directly in this launched process, without the queue; prints the durations."""
    from dbos import DBOS

    from bench.peers.dbos_app import chain40

    DBOS(config=_config(params["url"], "bench-inline"))
    DBOS.launch()
    durations = []
    for _ in range(params["repeats"] + 1):
        started = time.monotonic()
        chain40()
        durations.append(time.monotonic() - started)
    DBOS.destroy()
    print(json.dumps(durations), flush=True)


@contextmanager
def dbos_workers(count: int, url: str, log_dir: Path, tag: str) -> Iterator[None]:
    procs = []
    for i in range(count):
        log = open(log_dir / f"dbos-{tag}-{count}-{i}.log", "wb")  # noqa: SIM115 - lives as long as the process
        params = {"url": url, "executor_id": f"bench-{tag}-{count}-{i}"}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.peers.dbos_run", "worker", json.dumps(params)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        )
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"a DBOS worker did not start ({line!r}); see {log_dir}")
        yield
    finally:
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_finished(url: str, ids: list[str], timeout: float) -> list[tuple[str, int, int]]:
    """Polls until every workflow in ``ids`` has finished; returns (status, created_at, completed_at) of each."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url) as conn:
        while True:
            left = conn.execute(
                "SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s) AND status = ANY(%s)",
                (ids, list(UNFINISHED)),
            ).fetchone()
            conn.rollback()
            if left is not None and left[0] == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} DBOS workflows not finished after {timeout} s")
            time.sleep(0.005)
        rows = conn.execute(
            "SELECT status, created_at, completed_at FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)", (ids,)
        ).fetchall()
        conn.rollback()
    return [(str(s), int(c), int(f)) for s, c, f in rows]


def _client(url: str) -> Any:
    from dbos import DBOSClient

    from bench.peers.dbos_app import APP_NAME

    return DBOSClient(system_database_url=url, application_name=APP_NAME)


def _enqueue(client: Any, workflow: str) -> str:
    from bench.peers.dbos_app import QUEUE

    return str(client.enqueue({"workflow_name": workflow, "queue_name": QUEUE}).get_workflow_id())


def chain(url: str, repeats: int, log_dir: Path) -> dict[str, Any]:
    durations, statuses = [], set()
    client = _client(url)
    try:
        with dbos_workers(1, url, log_dir, "chain"):
            for _ in range(repeats + 1):
                ((status, created, completed),) = _wait_finished(url, [_enqueue(client, "chain-40")], 120)
                statuses.add(status)
                durations.append((completed - created) / 1000)
    finally:
        client.destroy()
    result = summary(durations[1:])
    result["statuses"] = sorted(statuses)
    result["per_step_overhead_ms"] = (result["p50"] / 40 - 0.010) * 1000
    return result


def chain_inline(url: str, repeats: int, log_dir: Path) -> dict[str, Any]:
    with open(log_dir / "dbos-inline.log", "wb") as log:
        out = subprocess.run(
            [sys.executable, "-m", "bench.peers.dbos_run", "inline", json.dumps({"url": url, "repeats": repeats})],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            check=True,
            timeout=600,
        ).stdout
    result = summary(json.loads(out.strip().splitlines()[-1])[1:])
    result["per_step_overhead_ms"] = (result["p50"] / 40 - 0.010) * 1000
    return result


def noop3_batch(url: str, runs: int, count: int, log_dir: Path) -> dict[str, Any]:
    rows: list[tuple[str, int, int]] = []

    def batch() -> dict[str, Any]:
        client = _client(url)
        try:
            _wait_finished(url, [_enqueue(client, "noop-3")], 60)  # warm-up: the queue is polled, the code loaded
            started = time.monotonic()
            ids = [_enqueue(client, "noop-3") for _ in range(runs)]
            enqueue_seconds = time.monotonic() - started
            rows.extend(_wait_finished(url, ids, 1800))
            elapsed = time.monotonic() - started
        finally:
            client.destroy()  # its connections' statistics reach pg_stat_database before the "after" reading
        return {"seconds": elapsed, "trigger_seconds": enqueue_seconds}

    admin, name = _admin(url), _dbname(url)
    # runs + 1: the warm-up run is inside the counted window too.
    measured = count_commits(
        lambda: xact_commit(admin, name), lambda: dbos_workers(count, url, log_dir, "noop3"), batch, runs + 1
    )
    return {
        "runs": runs,
        "workers": count,
        "runs_per_second": runs / measured["seconds"],
        "seconds": measured["seconds"],
        "trigger_seconds": measured["trigger_seconds"],
        "latency": summary([(completed - created) / 1000 for _, created, completed in rows]),
        "statuses": sorted({status for status, _, _ in rows}),
        "commits": measured["commits"],
    }


def throughput(url: str, runs: int, worker_counts: list[int], log_dir: Path) -> dict[str, Any]:
    return {f"{count}_workers": noop3_batch(url, runs, count, log_dir) for count in worker_counts}


def main(params: dict[str, Any]) -> dict[str, Any]:
    from importlib.metadata import version

    from dbos import DBOS

    from bench.peers.dbos_app import APP_NAME, QUEUE

    log_dir = Path(params.get("log_dir") or tempfile.mkdtemp(prefix="bench-dbos-"))
    url = params["system_database_url"]
    polling = float(params["polling_interval_sec"])
    concurrency = params.get("worker_concurrency")
    _recreate(url)
    try:
        DBOS.migrate(url)
        client = _client(url)
        try:
            client.register_queue(
                QUEUE, polling_interval_sec=polling, worker_concurrency=concurrency, application_name=APP_NAME
            )
        finally:
            client.destroy()
        result: dict[str, Any] = {
            "versions": {"dbos": version("dbos")},
            "system_database": _dbname(url),
            "queue": {"polling_interval_sec": polling, "worker_concurrency": concurrency},
            "telemetry": "off (enable_otlp false)",
        }
        sections = params.get("sections", ["chain", "throughput"])
        if "chain" in sections:
            result["chain"] = chain(url, params["chain_repeats"], log_dir)
            result["chain_inline"] = chain_inline(url, params["chain_repeats"], log_dir)
        if "throughput" in sections:
            result["throughput"] = throughput(url, params["throughput_runs"], params["worker_counts"], log_dir)
        return result
    finally:
        _recreate(url, create=False)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if sys.argv[1] == "worker":
        worker(json.loads(sys.argv[2]))
    elif sys.argv[1] == "inline":
        inline(json.loads(sys.argv[2]))
    else:
        print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
