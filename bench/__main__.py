"""Runs the benchmark and prints a table; `python -m bench --help`.

make bench                      # full size, telemetry on (OTLP to an in-process receiver)
make bench BENCH_ARGS=--quick   # small N, what CI runs to keep the harness working

Sections: chain, throughput (with commits per run), idle_latency, worker_memory (bench/ours.py); api, web_memory
(bench/api.py); limit (bench/pglimit.py); peers (bench/peers/: Celery + Redis, Prefect 3 and DBOS Transact from
their own venv, each beside ours with telemetry off; --peers picks some). In --quick the peers are skipped unless
named in --only. The machine's 1-minute load average is recorded after every section.

About 500 lines: the command line, the table and the JSON of every section live here, so that one run
prints one consistent table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import common


def setup_django() -> None:
    os.environ["DATABASE_URL"] = common.database_url()
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key")
    os.environ.setdefault("WEBHOOK_TOKEN", "benchmark-only-webhook-token")
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


# DBOS Transact's queue, as the peer is run (bench/peers/dbos_run.py): polled every 10 ms (its default is 1 s).
# DBOS sets no limit on the workflows one worker process runs at once, so the first worker to poll takes a whole
# deep queue and the others idle; 32 lets 2 and 4 workers share it, and one worker ran noop-3 as fast with 32 as
# with no limit here (with 8 at 0.6 times that rate, with 1 at a twentieth).
DBOS_POLLING_INTERVAL_SEC = 0.01
DBOS_WORKER_CONCURRENCY = 32
PEERS = ("celery", "prefect", "dbos")


@dataclass
class Context:
    env: dict[str, str]  # the service's environment for the chosen --telemetry
    log_dir: Path
    sizes: dict[str, Any]
    quick: bool
    explicit: set[str]  # sections named in --only
    telemetry: str = "on"
    peers: tuple[str, ...] = ()
    results: dict[str, Any] = field(default_factory=dict)  # what the sections before this one measured
    receiver: Any = None

    def env_on(self) -> dict[str, str]:
        if self.receiver is None:
            from tests.observability.receiver import Receiver

            self.receiver = Receiver().start()
        return common.service_env(**telemetry_env(self.receiver))

    def env_off(self) -> dict[str, str]:
        return common.service_env(OTEL_SDK_DISABLED="true")


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small N (CI smoke of the harness)")
    parser.add_argument("--only", default="", help=f"comma-separated sections to run ({', '.join(SECTIONS)})")
    parser.add_argument("--json", default=str(common.ROOT / "var" / "bench" / "results.json"))
    parser.add_argument("--telemetry", choices=("on", "off"), default="on")
    parser.add_argument("--runs", type=int, help="override the noop-3 run count (throughput, Celery, limit)")
    parser.add_argument("--web-requests", type=int, help="override the request count of web_memory")
    parser.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma-separated peers for the peers section ({', '.join(PEERS)})"
    )
    args = parser.parse_args()
    quick = args.quick
    sizes = {
        "chain_repeats": 2 if quick else 10,
        "throughput_runs": 30 if quick else 1000,
        "worker_counts": (1, 2) if quick else (1, 2, 4),
        "idle_runs": 5 if quick else 60,
        "memory_runs": 100 if quick else 10_000,
        "api_concurrency": 16,
        "api_seconds": 2 if quick else 5,
        "api_rounds": 1 if quick else 6,
        "cost_requests": (3, 8) if quick else (20, 60),
        "web_memory_requests": 200 if quick else 10_000,
        "limit_runs": 30 if quick else 300,
        "pgbench_seconds": 3 if quick else 10,
        "prefect_runs": 6 if quick else 30,
    }
    if args.runs:
        sizes.update(throughput_runs=args.runs, limit_runs=min(args.runs, sizes["limit_runs"]))
    if args.web_requests:
        sizes["web_memory_requests"] = args.web_requests
    explicit = {s for s in args.only.split(",") if s}
    sections = [s for s in SECTIONS if s in explicit] if explicit else list(SECTIONS)
    unknown = explicit - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))} (known: {', '.join(SECTIONS)})")
    chosen_peers = tuple(p for p in PEERS if p in args.peers.split(","))
    if set(args.peers.split(",")) - set(PEERS):
        parser.error(f"unknown peer(s) in --peers {args.peers!r} (known: {', '.join(PEERS)})")

    url = common.database_url()
    common.recreate_database(url)
    setup_django()
    env = common.service_env(OTEL_SDK_DISABLED="true")
    common.manage("migrate", "--noinput", env=env)
    common.manage("sync_workflows", env=env)

    results: dict[str, Any] = {
        "machine": common.machine(),
        "quick": quick,
        "telemetry": args.telemetry,
        "load_avg_start": os.getloadavg(),
    }
    ctx = Context(
        env=env,
        log_dir=Path(tempfile.mkdtemp(prefix="bench-")),
        sizes=sizes,
        quick=quick,
        explicit=explicit,
        telemetry=args.telemetry,
        peers=chosen_peers,
        results=results,
    )
    if args.telemetry == "on":
        ctx.env = ctx.env_on()
    try:
        for name in sections:
            started = time.monotonic()
            print(f"-- {name} ...", flush=True)
            results[name] = SECTIONS[name](ctx)
            results[name]["section_seconds"] = round(time.monotonic() - started, 1)
            results[name]["load_avg"] = [round(x, 2) for x in os.getloadavg()]
            _write(args.json, results)  # as it goes: a run stopped half-way keeps what it measured
    finally:
        if ctx.receiver is not None:
            spans = ctx.receiver.spans()
            results["telemetry_received"] = {
                "spans": len(spans),
                "agent_execute_spans": sum(s.name == "agent.execute" for s in spans),
                "metric_points": len(ctx.receiver.points()),
                "logs": len(ctx.receiver.logs()),
            }
            ctx.receiver.stop()
        _write(args.json, results)
    print(report(results))
    print(f"\nJSON: {args.json}   logs: {ctx.log_dir}")
    worked = {"chain", "throughput", "idle_latency", "worker_memory"} & set(sections)
    if args.telemetry == "on" and worked and not results["telemetry_received"]["agent_execute_spans"]:
        # The figures would claim telemetry on while the workers traced nothing.
        print("error: telemetry was on but the workers exported no agent.execute span", file=sys.stderr)
        return 1
    return 0


def _write(path: str, results: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2, default=str))


def _ours(name: str) -> Callable[[Context], dict[str, Any]]:
    def run(ctx: Context) -> dict[str, Any]:
        from bench import ours

        env, log_dir, sizes = ctx.env, ctx.log_dir, ctx.sizes
        if name == "chain":
            return ours.chain(env, log_dir, sizes["chain_repeats"])
        if name == "throughput":
            return ours.throughput(env, log_dir, sizes["throughput_runs"], sizes["worker_counts"])
        if name == "idle_latency":
            return ours.idle_latency(env, log_dir, sizes["idle_runs"])
        return ours.worker_memory(env, log_dir, sizes["memory_runs"])

    return run


def _api(ctx: Context) -> dict[str, Any]:
    from bench import api

    s = ctx.sizes
    return api.throughput(
        ctx.env_on(),
        ctx.env_off(),
        ctx.log_dir,
        concurrency=s["api_concurrency"],
        seconds=s["api_seconds"],
        rounds=s["api_rounds"],
    )


def _api_cost(ctx: Context) -> dict[str, Any]:
    import shutil

    from bench import cost

    if not shutil.which("valgrind") and "api_cost" not in ctx.explicit:
        return {"skipped": "needs valgrind (apt-get install -y valgrind)"}
    small, large = ctx.sizes["cost_requests"]
    return cost.instructions(ctx.env_off(), ctx.env_on(), small=small, large=large)


def _web_memory(ctx: Context) -> dict[str, Any]:
    from bench import api

    return api.web_memory(ctx.env, ctx.log_dir, requests=ctx.sizes["web_memory_requests"])


def _limit(ctx: Context) -> dict[str, Any]:
    from bench import pglimit

    return pglimit.limit(
        ctx.env, ctx.log_dir, runs=ctx.sizes["limit_runs"], pgbench_seconds=ctx.sizes["pgbench_seconds"]
    )


def _peers(ctx: Context) -> dict[str, Any]:
    if ctx.quick and "peers" not in ctx.explicit:
        return {"skipped": "skipped in --quick"}
    from bench.peers.run import peers

    s = ctx.sizes
    sizes = {
        "chain_repeats": s["chain_repeats"],
        "throughput_runs": s["throughput_runs"],
        "worker_counts": list(s["worker_counts"]),
    }
    params: dict[str, dict[str, Any]] = {
        "celery": sizes,
        # A Prefect 3 flow run costs seconds here (see bench/peers/prefect_run.py): fewer runs, same shape.
        "prefect": {**sizes, "chain_repeats": min(5, s["chain_repeats"]), "throughput_runs": s["prefect_runs"]},
        "dbos": {
            **sizes,
            "system_database_url": common.sibling_database_url("dbos"),
            "polling_interval_sec": DBOS_POLLING_INTERVAL_SEC,
            "worker_concurrency": DBOS_WORKER_CONCURRENCY,
        },
    }
    result = peers({name: params[name] for name in ctx.peers}, ctx.log_dir)
    result["ours_telemetry_off"] = _ours_telemetry_off(ctx)
    return result


def _ours_telemetry_off(ctx: Context) -> dict[str, Any]:
    """Ours beside the peers, none of which exports telemetry: the chain and throughput sections' figures when they
    ran with --telemetry off, else measured again here with telemetry off."""
    from bench import ours

    s, env = ctx.sizes, ctx.env_off()
    reused = ctx.results if ctx.telemetry == "off" else {}
    chain = reused.get("chain") or ours.chain(env, ctx.log_dir, s["chain_repeats"])
    throughput = reused.get("throughput") or ours.throughput(env, ctx.log_dir, s["throughput_runs"], s["worker_counts"])
    return {"chain": chain, "throughput": throughput}


SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "chain": _ours("chain"),
    "throughput": _ours("throughput"),
    "idle_latency": _ours("idle_latency"),
    "worker_memory": _ours("worker_memory"),
    "api": _api,
    "api_cost": _api_cost,
    "web_memory": _web_memory,
    "limit": _limit,
    "peers": _peers,
}


# -- the table -------------------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


class Table:
    def __init__(self) -> None:
        self.lines = [f"{'workload':<52} {'result':>17}  {'target':<10} {'load':>5}", "-" * 88]

    def row(self, label: str, result: str, target: str = "", load: Any = None) -> None:
        self.lines.append(f"{label:<52} {result:>17}  {target:<10} {_f(load, 2) if load is not None else '':>5}")

    def note(self, text: str) -> None:
        self.lines.append(f"  {text}")


def _load(section: dict[str, Any]) -> Any:
    return (section.get("load_avg") or [None])[0]


def report(results: dict[str, Any]) -> str:
    lines = [f"machine: {results['machine']}", f"telemetry: {results['telemetry']}", ""]
    t = Table()
    if "chain" in results:
        c = results["chain"]
        t.row("chain-40 trigger -> SUCCESS, p50 (s)", _f(c["p50"]), "< 1.0", _load(c))
        t.row("chain-40 runner overhead per step (ms)", _f(c["per_step_overhead_ms"], 1), "", _load(c))
    for key, tp in results.get("throughput", {}).items():
        if not isinstance(tp, dict):
            continue
        label = f"noop-3 x{tp['runs']}, {key.replace('_', ' ')} (runs/s)"
        t.row(label, _f(tp["runs_per_second"], 1), "", _load(results["throughput"]))
        t.row("  trigger -> finish p50 / p99 (s)", f"{_f(tp['latency']['p50'])} / {_f(tp['latency']['p99'])}")
        _commit_row(t, "  commits per run (in all, idle workers' included)", tp["commits"])
    if "idle_latency" in results:
        i = results["idle_latency"]
        t.row("idle: trigger -> first step, p50 (ms)", _f(i["p50"], 1), "< 50", _load(i))
        t.row("idle: trigger -> first step, p99 (ms)", _f(i["p99"], 1), "< 200", _load(i))
    if "worker_memory" in results:
        m = results["worker_memory"]
        t.row(
            f"worker RSS idle / after {m['runs']} runs (MiB)",
            f"{_f(m['idle'], 1)} / {_f(m['after_all'], 1)}",
            "no growth",
            _load(m),
        )
        t.row("  after half / after all (MiB)", f"{_f(m['after_half'], 1)} / {_f(m['after_all'], 1)}")
    if "api" in results:
        a = results["api"]
        head = f"API trigger, {a['concurrency']} clients, {a['generator']}"
        for mode in ("off", "on"):
            r = a[mode]
            t.row(f"{head}, telemetry {mode} (req/s)", _f(r["requests_per_second"], 1), "", _load(a))
            t.row(
                f"  p50 / p99 latency (ms), {r['requests']} req, {r['errors']} err",
                f"{_f(r['p50_ms'], 1)} / {_f(r['p99_ms'], 1)}",
            )
        t.row(
            f"API telemetry on/off ratio (median of {len(a['round_ratios'])} paired rounds)",
            _f(a["on_off_ratio"]),
            ">= 0.85",
            _load(a),
        )
        t.row(
            "  web CPU per request off / on (ms); on/off req per CPU-s",
            f"{_f(a['off']['web_cpu_ms_per_request'], 2)} / {_f(a['on']['web_cpu_ms_per_request'], 2)};"
            f" {_f(a['cpu_on_off_ratio'])}",
        )
    if "api_cost" in results and "skipped" in results["api_cost"]:
        t.note(f"api_cost: {results['api_cost']['skipped']}")
    elif "api_cost" in results:
        c = results["api_cost"]
        per = c["instructions_per_request"]
        t.row(
            "API trigger instr./request off/on/every_span/sampled/untraced (M)",
            " / ".join(f"{per[mode] / 1e6:.2f}" for mode in ("off", "on", "every_span", "sampled", "untraced")),
        )
        t.row("  telemetry on/off, every run traced (CPU ratio)", _f(c["ratio_on"]), ">= 0.85", _load(c))
        t.row("  telemetry on/off, every query a span too (CPU ratio)", _f(c["ratio_every_span"]))
        t.row(f"  telemetry on/off, traces sampled at {c['sampled_ratio']} (CPU ratio)", _f(c["ratio_sampled"]))
        t.row("  telemetry on/off, no trace recorded (CPU ratio)", _f(c["ratio_untraced"]))
    if "web_memory" in results:
        w = results["web_memory"]
        t.row(
            f"web RSS master+workers idle / after {w['requests']} req (MiB)",
            f"{_f(w['idle']['total_rss'], 1)} / {_f(w['after_all']['total_rss'], 1)}",
            "no growth",
            _load(w),
        )
        t.row(
            "  after half / after all (MiB)",
            f"{_f(w['after_half']['total_rss'], 1)} / {_f(w['after_all']['total_rss'], 1)}",
        )
        t.row("  PSS idle / after all (MiB)", f"{_f(w['idle']['total_pss'], 1)} / {_f(w['after_all']['total_pss'], 1)}")
    if "limit" in results:
        lim = results["limit"]
        pg, o = lim["pgbench"], lim["ours"]
        t.row(
            f"pgbench tpcb-like -c{pg['clients']} -j{pg['threads']} -T{pg['seconds']} (tps)",
            _f(pg["tps"], 0),
            "",
            pg["load_1m"],
        )
        t.row(f"our commits per noop-3 run ({o['runs']} runs, {o['workers']} workers)", _f(o["commits_per_run"], 1))
        t.row("  at runs/s", _f(o["runs_per_second"], 1))
        t.row("commits/s used / pgbench tps", _f(lim["fraction_of_pgbench_tps"]), "", _load(lim))
        t.row("  runs/s if every commit were a pgbench tx", _f(lim["runs_per_second_at_pgbench_tps"], 0))
    if "peers" in results:
        _peer_rows(t, results)
    lines += t.lines
    if "telemetry_received" in results:
        tr = results["telemetry_received"]
        lines.append(
            f"\ntelemetry received: {tr['spans']} spans ({tr['agent_execute_spans']} agent.execute),"
            f" {tr['metric_points']} metric points, {tr['logs']} logs"
        )
    return "\n".join(lines)


PEER_LABELS = {"celery": "Celery + Redis", "prefect": "Prefect 3", "dbos": "DBOS Transact"}


def _commit_row(t: Table, label: str, commits: dict[str, Any]) -> None:
    t.row(label, f"{_f(commits['per_run'], 1)} ({_f(commits['total_per_run'], 1)})")


def _peer_rows(t: Table, results: dict[str, Any]) -> None:
    p = results["peers"]
    if "skipped" in p:
        t.row(f"peers ({', '.join(PEER_LABELS.values())})", p["skipped"])
        return
    off = p.get("ours_telemetry_off", {})
    ours_chain = off.get("chain", {}).get("p50")
    ours_tp = off.get("throughput", {})
    t.note("peers: none exports telemetry, so ours beside them runs with telemetry off")
    if ours_chain:
        t.row("ours, telemetry off: chain-40 p50 (s)", _f(ours_chain), "", _load(p))
    for key, tp in ours_tp.items():
        t.row(
            f"ours, telemetry off: noop-3 x{tp['runs']}, {key.replace('_', ' ')} (runs/s)", _f(tp["runs_per_second"], 1)
        )
        t.row(
            "  all triggered after (s), of the whole batch's (s)",
            f"{_f(tp['trigger_seconds'], 1)} / {_f(tp['seconds'], 1)}",
        )
        if "commits" in tp:
            _commit_row(t, "  commits per run (in all, idle workers' included)", tp["commits"])
    for name, label in PEER_LABELS.items():
        if name not in p:
            continue
        r = p[name]
        if not r.get("available"):
            t.row(f"{label}", f"not available: {r.get('reason', 'not run')}"[:60])
            continue
        version = ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items())
        queue = r.get("queue")
        if queue:
            version += (
                f"; queue polled every {queue['polling_interval_sec']} s,"
                f" worker_concurrency {queue['worker_concurrency']}; telemetry {r.get('telemetry', '?')}"
            )
        t.note(f"{label} ({version})")
        if "chain" in r:
            via = " through its queue" if queue else ""
            t.row(f"{label}: chain of 40 x 10 ms{via}, p50 (s)", _f(r["chain"]["p50"]), "", _load(p))
            if ours_chain:
                t.row(
                    "  ours / peer (time, < 1 = we are faster)",
                    f"{_f(ours_chain)} / {_f(r['chain']['p50'])} = {_f(ours_chain / r['chain']['p50'], 2)}",
                )
        if "chain_inline" in r:
            t.row(f"{label}: chain of 40 called in-process, p50 (s)", _f(r["chain_inline"]["p50"]))
        for key, tp in r.get("throughput", {}).items():
            t.row(f"{label}: 3 no-op x{tp['runs']}, {key.replace('_', ' ')} (runs/s)", _f(tp["runs_per_second"], 1))
            t.row("  trigger -> finish p50 / p99 (s)", f"{_f(tp['latency']['p50'])} / {_f(tp['latency']['p99'])}")
            if "trigger_seconds" in tp and "seconds" in tp:
                t.row(
                    "  all triggered after (s), of the whole batch's (s)",
                    f"{_f(tp['trigger_seconds'], 1)} / {_f(tp['seconds'], 1)}",
                )
            ours = ours_tp.get(key)
            if isinstance(ours, dict):
                t.row(
                    "  ours / peer (runs/s, > 1 = we are faster)",
                    f"{_f(ours['runs_per_second'], 1)} / {_f(tp['runs_per_second'], 1)}"
                    f" = {_f(ours['runs_per_second'] / tp['runs_per_second'], 2)}",
                )
            if "commits" in tp and isinstance(ours, dict) and "commits" in ours:
                oc, pc = ours["commits"], tp["commits"]
                t.row(
                    "  commits per run, ours / peer (in all, idle workers' incl.)",
                    f"{_f(oc['per_run'], 1)} ({_f(oc['total_per_run'], 1)}) / {_f(pc['per_run'], 1)}"
                    f" ({_f(pc['total_per_run'], 1)})",
                )


if __name__ == "__main__":
    raise SystemExit(main())
