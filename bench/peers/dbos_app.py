"""The DBOS Transact side of the peer workloads: a workflow of 40 sequential 10 ms steps and one of 3 no-op steps.

DBOS checkpoints every step's outcome in its system database before the next step starts, as we record every
step, so a crashed workflow resumes after its last finished step. The workflows run in the worker processes
of bench/peers/dbos_run.py, which take them from a queue in that database.
"""

from __future__ import annotations

import time

from dbos import DBOS

APP_NAME = "commandcenter-bench"
QUEUE = "bench"


@DBOS.step()
def sleep10() -> None:
    time.sleep(0.010)


@DBOS.step()
def noop() -> None:
    return None


@DBOS.workflow(name="chain-40")
def chain40() -> None:
    for _ in range(40):
        sleep10()


@DBOS.workflow(name="noop-3")
def noop3() -> None:
    noop()
    noop()
    noop()
