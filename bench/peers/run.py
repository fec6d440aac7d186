"""Runs the peer drivers in the peers' venv (``bench.peers.install``) and collects their JSON.

A peer that cannot be installed or run is reported as ``{"available": false, "reason": ...}``: the table then
says "not available: <reason>" instead of a figure.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bench.peers import install

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = {"celery": "bench.peers.celery_run", "prefect": "bench.peers.prefect_run", "dbos": "bench.peers.dbos_run"}


def _reason(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:300]


def run_peer(name: str, params: dict[str, Any], log_dir: Path, timeout: float = 3600) -> dict[str, Any]:
    try:
        python = install.ensure()
    except (subprocess.CalledProcessError, OSError) as exc:
        return {"available": False, "reason": f"the bench-peers group did not install: {exc}"}
    log = log_dir / f"peer-{name}.log"
    try:
        proc = subprocess.run(
            [str(python), "-m", DRIVERS[name], json.dumps({**params, "log_dir": str(log_dir)})],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"available": False, "reason": f"did not finish in {timeout:.0f} s"}
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        return {"available": False, "reason": f"{name} driver failed: {_reason(proc.stderr)} (log: {log})"}
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"available": False, "reason": f"{name} driver printed no result (log: {log})"}
    return {"available": True, **result}


def peers(params: dict[str, dict[str, Any]], log_dir: Path) -> dict[str, Any]:
    """``params`` maps each peer's name to its sizes."""
    return {name: run_peer(name, sizes, log_dir) for name, sizes in params.items()}
