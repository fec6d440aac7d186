"""Runs the benchmark and prints a table; `python -m bench --help`.

make bench                      # full size, telemetry on (OTLP to an in-process receiver)
make bench BENCH_ARGS=--quick   # small N, what CI runs to keep the harness working
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common


def setup_django() -> None:
    os.environ["DATABASE_URL"] = common.database_url()
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key")
    os.environ.setdefault("OTEL_SDK_DISABLED", "true")  # the benchmark driver itself is not measured
    os.environ.setdefault("LOG_LEVEL", "warning")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(common.ROOT))
    import django

    django.setup()


def telemetry_env(receiver: Any) -> dict[str, str]:
    return {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N (CI smoke of the harness)")
    parser.add_argument("--only", default="", help="comma-separated sections to run")
    parser.add_argument("--json", default=str(common.ROOT / "var" / "bench" / "results.json"))
    parser.add_argument("--telemetry", choices=("on", "off"), default="on")
    args = parser.parse_args()
    quick = args.quick
    sizes = {
        "chain_repeats": 2 if quick else 10,
        "throughput_runs": 30 if quick else 1000,
        "worker_counts": (1, 2) if quick else (1, 2, 4),
        "idle_runs": 5 if quick else 60,
        "memory_runs": 100 if quick else 10_000,
    }
    sections = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))} (known: {', '.join(SECTIONS)})")

    url = common.database_url()
    common.recreate_database(url)
    setup_django()
    env = common.service_env(OTEL_SDK_DISABLED="true")
    common.manage("migrate", "--noinput", env=env)
    common.manage("sync_workflows", env=env)

    receiver = None
    if args.telemetry == "on":
        from tests.observability.receiver import Receiver

        receiver = Receiver().start()
        env = common.service_env(**telemetry_env(receiver))

    results: dict[str, Any] = {"machine": common.machine(), "quick": quick, "telemetry": args.telemetry}
    log_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        for name in sections:
            started = time.monotonic()
            print(f"-- {name} ...", flush=True)
            results[name] = SECTIONS[name](env, log_dir, sizes)
            results[name]["section_seconds"] = round(time.monotonic() - started, 1)
    finally:
        if receiver is not None:
            results["telemetry_received"] = {
                "spans": len(receiver.spans()),
                "metric_points": len(receiver.points()),
                "logs": len(receiver.logs()),
            }
            receiver.stop()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(report(results))
    print(f"\nJSON: {args.json}   worker logs: {log_dir}")
    return 0


def _ours(name: str) -> Any:
    def run(env: dict[str, str], log_dir: Path, sizes: dict[str, Any]) -> dict[str, Any]:
        from bench import ours

        if name == "chain":
            return ours.chain(env, log_dir, sizes["chain_repeats"])
        if name == "throughput":
            return ours.throughput(env, log_dir, sizes["throughput_runs"], sizes["worker_counts"])
        if name == "idle_latency":
            return ours.idle_latency(env, log_dir, sizes["idle_runs"])
        return ours.worker_memory(env, log_dir, sizes["memory_runs"])

    return run


SECTIONS: dict[str, Any] = {
    "chain": _ours("chain"),
    "throughput": _ours("throughput"),
    "idle_latency": _ours("idle_latency"),
    "worker_memory": _ours("worker_memory"),
}


def report(results: dict[str, Any]) -> str:
    lines = [f"machine: {results['machine']}", f"telemetry: {results['telemetry']}", ""]
    lines.append(f"{'workload':<44} {'result':>14}  {'target':<12}")
    if "chain" in results:
        c = results["chain"]
        lines.append(f"{'chain-40 trigger -> SUCCESS, p50 (s)':<44} {c['p50']:>14.3f}  {'< 1.0':<12}")
        lines.append(f"{'chain-40 runner overhead per step (ms)':<44} {c['per_step_overhead_ms']:>14.1f}")
    for key, t in results.get("throughput", {}).items():
        if not isinstance(t, dict):
            continue
        lines.append(
            f"{'noop-3 x' + str(t['runs']) + ', ' + key.replace('_', ' ') + ' (runs/s)':<44} {t['runs_per_second']:>14.1f}"
        )
        lines.append(
            f"{'  trigger -> finish p50 / p99 (s)':<44} {t['latency']['p50']:>6.3f} / {t['latency']['p99']:<6.3f}"
        )
    if "idle_latency" in results:
        i = results["idle_latency"]
        lines.append(f"{'idle: trigger -> first step, p50 (ms)':<44} {i['p50']:>14.1f}  {'< 50':<12}")
        lines.append(f"{'idle: trigger -> first step, p99 (ms)':<44} {i['p99']:>14.1f}  {'< 200':<12}")
    if "worker_memory" in results:
        m = results["worker_memory"]
        lines.append(
            f"{'worker RSS idle / after ' + str(m['runs']) + ' runs (MiB)':<44} {m['idle']:>6.1f} / {m['after_all']:<6.1f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
