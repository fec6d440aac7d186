#!/usr/bin/env python
"""Request throughput and per-step overhead with telemetry on versus off.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/cc_overhead .venv/bin/python scripts/telemetry_overhead.py

Use a scratch PostgreSQL database: the script migrates it, syncs the bundled workflows and deletes every
run in it before each measurement. Each mode runs in a fresh child process (OpenTelemetry is set up once
per process), which

1. triggers the ``quick`` test workflow ``--requests`` times through Django's WSGI handler (the test
   client: the full middleware stack, Django and psycopg instrumentation included, no network), and
2. runs the ``chain-40`` workflow (40 sequential 10 ms sleep steps) ``--chains`` times on an in-process
   worker; the time per step beyond its 10 ms sleep is what the runner (and telemetry) costs.

Modes: ``off`` (OTEL_SDK_DISABLED=true) and ``on`` with traces, metrics and logs exported over OTLP, gRPC
and HTTP/protobuf, to a receiver in the parent process (tests/observability/receiver.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHAIN_STEPS = 40
CHAIN_SLEEP = 0.01


def child(requests: int, chains: int) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from observability.otel import bootstrap, shutdown

    enabled = bootstrap()
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.test import Client
    from django_tasks_db.models import DBTaskResult

    from accounts.models import ApiToken
    from workflows.management.commands.worker import Worker
    from workflows.models import TERMINAL_RUN_STATUSES, WorkflowRun

    WorkflowRun.objects.all().delete()
    DBTaskResult.objects.all().delete()
    user, _ = User.objects.get_or_create(username="overhead", defaults={"is_staff": True, "is_superuser": True})
    _, token = ApiToken.issue(user, name="overhead", scopes=("trigger", "read"))
    client = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {token}")

    def trigger(slug: str) -> str:
        response = client.post(f"/api/workflows/{slug}/trigger", data="{}", content_type="application/json")
        assert response.status_code == 202, response.content
        return str(response.json()["id"])

    worker = Worker.draining("overhead", interval=0.01)

    def drain(run_id: str) -> None:
        while True:
            task = worker.next_task()
            if task is not None:
                worker.run_task(task)
                continue
            if WorkflowRun.objects.filter(id=run_id, status__in=TERMINAL_RUN_STATUSES).exists():
                return
            time.sleep(0.005)

    for _ in range(20):  # warm-up: imports, URL resolution, connections
        trigger("quick")
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(requests):
        trigger("quick")
    trigger_seconds = time.perf_counter() - started
    trigger_cpu = time.process_time() - cpu
    DBTaskResult.objects.all().delete()
    WorkflowRun.objects.all().delete()

    drain(trigger("chain-40"))  # warm-up
    per_step, cpu_per_step = [], []
    for _ in range(chains):
        run_id = trigger("chain-40")
        started, cpu = time.perf_counter(), time.process_time()
        drain(run_id)
        per_step.append((time.perf_counter() - started) / CHAIN_STEPS)
        cpu_per_step.append((time.process_time() - cpu) / CHAIN_STEPS)
        assert WorkflowRun.objects.get(id=run_id).status == "SUCCESS"
    shutdown()
    return {
        "telemetry": enabled,
        "requests_per_second": requests / trigger_seconds,
        "ms_per_request": trigger_seconds / requests * 1000,
        "ms_per_step": statistics.median(per_step) * 1000,
        "ms_runner_per_step": (statistics.median(per_step) - CHAIN_SLEEP) * 1000,
        # CPU time of the whole process (exporter threads included): what telemetry costs, without the
        # database's latency, which varies with whatever else the machine is doing.
        "cpu_ms_per_request": trigger_cpu / requests * 1000,
        "cpu_ms_per_step": statistics.median(cpu_per_step) * 1000,
    }


def prepare(env: dict[str, str]) -> None:
    for args in (
        ["migrate", "-v0"],
        ["sync_workflows", "-v0"],
        ["sync_workflows", "-v0", "tests/observability/workflows"],
    ):
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="trigger requests per mode and round (default 200)")
    parser.add_argument("--chains", type=int, default=3, help="chain-40 runs per mode and round (default 3)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="the modes take turns this many times; medians are shown (default 3)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(child(options.requests, options.chains)))
        return
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        parser.error("set DATABASE_URL to a scratch PostgreSQL database")

    from tests.observability.receiver import Receiver

    receiver = Receiver().start()
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    base.update(DEBUG="1", LOG_LEVEL="info", LOG_FORMAT="json", DATABASE_POOL="0")
    prepare(base)
    modes = {
        "off": {"OTEL_SDK_DISABLED": "true"},
        "on (OTLP gRPC)": {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        },
        "on (OTLP HTTP)": {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        },
    }
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in modes}
    # Modes take turns, so that a noisy neighbour on the machine does not favour one of them.
    for _ in range(options.rounds):
        for name, extra in modes.items():
            args = [sys.executable, __file__, "--child", "--requests", str(options.requests)]
            args += ["--chains", str(options.chains)]
            out = subprocess.run(args, cwd=ROOT, env={**base, **extra}, check=True, capture_output=True, text=True)
            rounds[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    receiver.stop()
    results = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0] if key != "telemetry"}
        for name, runs in rounds.items()
    }

    off = results["off"]
    print(
        f"{'telemetry':<16} {'trigger req/s':>14} {'ms/request':>11} {'CPU ms/request':>15} "
        f"{'ms/step':>8} {'CPU ms/step':>12}"
    )
    for name, r in results.items():
        print(
            f"{name:<16} {r['requests_per_second']:>14.1f} {r['ms_per_request']:>11.2f} "
            f"{r['cpu_ms_per_request']:>15.2f} {r['ms_per_step']:>8.2f} {r['cpu_ms_per_step']:>12.2f}"
        )
    for name, r in results.items():
        if name != "off":
            print(
                f"{name}: CPU {r['cpu_ms_per_request'] - off['cpu_ms_per_request']:+.2f} ms per trigger request, "
                f"{r['cpu_ms_per_step'] - off['cpu_ms_per_step']:+.2f} ms per step; wall "
                f"{r['ms_per_request'] - off['ms_per_request']:+.2f} ms per request, "
                f"{r['ms_per_step'] - off['ms_per_step']:+.2f} ms per step"
            )
    print(f"(the receiver got {len(receiver.spans())} spans, {len(receiver.logs())} log records)")


if __name__ == "__main__":
    main()
