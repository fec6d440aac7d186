"""The worker's liveness, as a file whose modification time its maintenance loop renews on every pass.

A worker spends most of its time waiting (for a NOTIFY, for a step's agent), so neither its CPU nor its log says
whether it still works; the maintenance loop runs every RUNNER_REAPER_INTERVAL seconds whatever the queue holds.
With WORKER_HEARTBEAT_FILE set, the loop touches that file before each pass, and

    python -m workflows.heartbeat [MAX_AGE_SECONDS]

(the liveness probe of deploy/'s compose file and Helm chart) exits 0 while the file is younger than
MAX_AGE_SECONDS (default 60) and 1 otherwise, naming why. The check imports neither Django nor the project, so a
probe costs a bare Python start.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def beat() -> None:
    """Renews the heartbeat file, if WORKER_HEARTBEAT_FILE names one."""
    from django.conf import settings

    if settings.WORKER_HEARTBEAT_FILE:
        Path(settings.WORKER_HEARTBEAT_FILE).touch()


def age(path: str) -> float:
    """Seconds since the heartbeat file was last renewed."""
    return time.time() - os.stat(path).st_mtime


def main(argv: list[str]) -> int:
    path = os.environ.get("WORKER_HEARTBEAT_FILE", "")
    max_age = float(argv[0]) if argv else 60.0
    if not path:
        print("WORKER_HEARTBEAT_FILE is not set: the worker keeps no heartbeat", file=sys.stderr)
        return 1
    try:
        seconds = age(path)
    except FileNotFoundError:
        print(f"no heartbeat yet at {path}", file=sys.stderr)
        return 1
    if seconds > max_age:
        print(f"last heartbeat {seconds:.0f}s ago (limit {max_age:g}s): the maintenance loop is stuck", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
