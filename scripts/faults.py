#!/usr/bin/env python3
"""Runs the fault-injection suite and prints the reliability table (docs/reliability.md) from what it measured.

    .venv/bin/python scripts/faults.py                 # CI size (300-run fault soak), ~7 min
    .venv/bin/python scripts/faults.py --large         # 1,500-run soak, longer outages (RELIABILITY_SCALE=large)
    .venv/bin/python scripts/faults.py --table-only    # print the table from the last results
    .venv/bin/python scripts/faults.py -k soak         # one scenario (pytest -k)

DATABASE_URL names the PostgreSQL the tests create their database on (default 127.0.0.1:5432/commandcenter).
The scenarios that restart PostgreSQL never touch that server: each module starts a throwaway cluster of its own.
Results land in var/reliability/ (var/reliability/large/ with --large), one JSON file per scenario.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("scenario", "load", "faults", "lost", "stuck", "duplicates", "recovery")


def recovery(r: dict) -> str:
    keys = {
        "fault-soak": lambda: (
            f"{r['lost_attempts']} attempts lost, all to killed workers ({r['duplicates_unexplained']} unexplained); "
            f"{r['duplicate_http_calls']} repeated HTTP calls; triggers answered {r['trigger_answers']}; "
            f"{r['open_at_load_end']} runs open when the load ended, all done {r['quiescence_s']} s later"
        ),
        "postgres-quick-restart": lambda: (
            f"attempts {r['attempts']}; API reads right after: {r['reads_after_restart']}; "
            f"all runs done {r['all_runs_done_after_s']} s after; workers alive {r['workers_alive']}/3"
        ),
        "sigterm-collector-down": lambda: (
            f"stops {r['stop_s']['traced']} s after SIGTERM (without telemetry: {r['stop_s']['untraced']} s)"
        ),
        "sigterm": lambda: (
            f"exits {r['hasty_exit_s']} s (release) / {r['patient_exit_s']} s (finish); "
            f"rest done {r['rest_done_after_s']} s later"
        ),
        "postgres-restart": lambda: (
            f"{r['refused_during_outage']} triggers answered 503 while down, reads within "
            f"{r['reads_during_outage_max_s']} s, /healthz within {r['healthz_max_s']} s; first 202 "
            f"{r['first_202_after_s']} s after start; all runs done {r['all_runs_done_after_s']} s after; "
            f"workers alive {r['workers_alive']}/2"
        ),
        "pg-terminate-backend": lambda: (
            f"all runs done {r['all_runs_done_after_s']} s after the last kill; "
            f"answers {r['answers']}; workers alive {r['workers_alive']}/2"
        ),
    }
    if r["scenario"] in keys:
        return keys[r["scenario"]]()
    if r["scenario"].startswith("notifier"):
        return f"step FAILED after {r['attempts']} attempts, {r['failed_after_s']} s; run FAILED"
    return ""


def table(directory: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    order = [
        "fault-soak",
        "sigterm",
        "sigterm-collector-down",
        "postgres-quick-restart",
        "postgres-restart",
        "pg-terminate-backend",
    ]
    rows.sort(key=lambda r: (order.index(r["scenario"]) if r["scenario"] in order else 99, r["scenario"]))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [r["scenario"], r.get("load", ""), r.get("faults", ""), r.get("lost", ""), r.get("stuck", "")]
        cells += [r.get("duplicates", ""), recovery(r)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", action="store_true", help="the 500-run soak and longer outages")
    parser.add_argument("--table-only", action="store_true", help="print the table from the last results")
    parser.add_argument("-k", default="", help="pytest -k expression (one scenario)")
    args = parser.parse_args()
    results = ROOT / "var" / "reliability" / ("large" if args.large else "")
    code = 0
    if not args.table_only:
        env = {**os.environ, "RELIABILITY_RESULTS_DIR": str(results)}
        if args.large:
            env["RELIABILITY_SCALE"] = "large"
        command = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider"]
        if args.k:
            command += ["-k", args.k]
        code = subprocess.call(command, cwd=ROOT, env=env)
    print(table(results))
    return code


if __name__ == "__main__":
    sys.exit(main())
