"""The Prefect 3 side of the peer workloads: a flow of 40 sequential 10 ms tasks and a flow of 3 no-op tasks."""

from __future__ import annotations

import time

from prefect import flow, task


@task
def sleep10() -> None:
    time.sleep(0.010)


@task
def noop() -> None:
    return None


@flow(name="chain-40", log_prints=False)
def chain40() -> None:
    for _ in range(40):
        sleep10()


@flow(name="noop-3", log_prints=False)
def noop3() -> float:
    noop()
    noop()
    noop()
    return time.time()
