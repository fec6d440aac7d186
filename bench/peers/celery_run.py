"""Celery + Redis driver: ``<peers venv>/bin/python -m bench.peers.celery_run '{"chain_repeats": 10, ...}'``.

Starts ``celery worker --pool=solo`` processes (concurrency 1 each) from the peers' venv, flushes the dedicated
Redis database first, and prints one JSON object with the results on its last line.

- chain: ``celery.chain`` of 40 ``sleep10`` tasks, trigger -> last result, one worker; the first run warms up.
- throughput: ``runs`` chains of 3 ``noop`` tasks triggered as fast as possible into 1, 2, 4 workers;
  runs/s is runs / (first trigger -> last result), latency is trigger -> the third task's finish.
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

from bench.peers.celery_tasks import REDIS_URL, app, noop, sleep10
from bench.peers.stats import summary

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def celery_workers(count: int, log_dir: Path) -> Iterator[None]:
    procs = []
    logs = [log_dir / f"celery-{count}-{i}.log" for i in range(count)]
    for i, log in enumerate(logs):
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "bench.peers.celery_tasks",
                        "worker",
                        "--pool=solo",
                        "--loglevel=INFO",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                        "-n",
                        f"bench{i}@%h",
                    ],
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        deadline = time.monotonic() + 60
        while not all(b" ready." in log.read_bytes() for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"celery workers did not start; see {log_dir}")
            time.sleep(0.05)
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def flush() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def chain(repeats: int, log_dir: Path) -> dict[str, Any]:
    from celery import chain as celery_chain

    durations = []
    with celery_workers(1, log_dir):
        for _ in range(repeats + 1):
            started = time.monotonic()
            celery_chain(*[sleep10.s() for _ in range(40)]).apply_async().get(timeout=120)
            durations.append(time.monotonic() - started)
    result = summary(durations[1:])
    result["per_step_overhead_ms"] = (result["p50"] / 40 - 0.010) * 1000
    return result


def throughput(runs: int, worker_counts: list[int], log_dir: Path) -> dict[str, Any]:
    from celery import chain as celery_chain

    out: dict[str, Any] = {}
    for count in worker_counts:
        flush()
        with celery_workers(count, log_dir):
            celery_chain(noop.s(), noop.s(), noop.s()).apply_async().get(timeout=60)  # warm-up
            started = time.monotonic()
            triggered = []
            for _ in range(runs):
                at = time.time()
                triggered.append((at, celery_chain(noop.s(), noop.s(), noop.s()).apply_async()))
            trigger_seconds = time.monotonic() - started
            finished = [(at, res.get(timeout=600)) for at, res in triggered]
            elapsed = time.monotonic() - started
        last = max(f for _, f in finished)
        latencies = [f - at for at, f in finished]
        out[f"{count}_workers"] = {
            "runs": runs,
            # from the first trigger to the last run's finish (its own timestamp, not when the driver read it)
            "runs_per_second": runs / (last - triggered[0][0]),
            "driver_seconds": elapsed,
            "trigger_seconds": trigger_seconds,
            "latency": summary(latencies),
        }
    return out


def main() -> None:
    params = json.loads(sys.argv[1])
    log_dir = Path(params.get("log_dir") or tempfile.mkdtemp(prefix="bench-celery-"))
    import celery
    import redis

    flush()
    result: dict[str, Any] = {
        "versions": {"celery": celery.__version__, "redis-py": redis.__version__},
        "broker": REDIS_URL,
        "pool": "solo (one process per worker, concurrency 1)",
    }
    sections = params.get("sections", ["chain", "throughput"])
    if "chain" in sections:
        result["chain"] = chain(params["chain_repeats"], log_dir)
    if "throughput" in sections:
        result["throughput"] = throughput(params["throughput_runs"], params["worker_counts"], log_dir)
    flush()
    app.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
