"""Servers and workers started by the tests die with the test run, however it ends (tests/children.py), and what an
earlier run left holding the test database is killed before the next one starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.children import kill_leftovers

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for the test run: starts a "server" through tests.children.popen, which starts a helper of its own
# in its process group (as gunicorn starts its workers), prints both pids, then waits to be interrupted.
RUN = """
import subprocess, sys, time
from tests.children import popen
server = popen([sys.executable, "-c", "import subprocess, sys, time; "
                "helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                "print(helper.pid, flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
helper = server.stdout.readline().strip()
print(server.pid, helper, flush=True)
time.sleep(600)
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(*pids: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def run() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """The stand-in test run, with the pids of its server and the server's helper."""
    parent = subprocess.Popen(
        [sys.executable, "-c", RUN],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert parent.stdout is not None
    server, helper = (int(pid) for pid in parent.stdout.readline().split())
    yield parent, server, helper
    parent.kill()
    parent.wait(10)
    for pid in (server, helper):
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_test_run_takes_its_servers_with_it(run: tuple[subprocess.Popen[str], int, int]) -> None:
    parent, server, _ = run
    assert psutil.Process(server).ppid() == parent.pid
    assert os.getpgid(server) == server != os.getpgid(parent.pid), "the server leads its own process group"
    parent.send_signal(signal.SIGKILL)  # no cleanup code runs: the kernel's parent-death signal does it
    assert wait_gone(server), "the server outlived the killed test run"


def test_an_interrupted_test_run_takes_its_servers_and_what_they_started_with_it(
    run: tuple[subprocess.Popen[str], int, int],
) -> None:
    parent, server, helper = run
    assert os.getpgid(helper) == server, "the helper is in the server's process group"
    parent.send_signal(signal.SIGINT)  # Ctrl-C: KeyboardInterrupt, then the exit handlers run
    parent.wait(10)
    assert wait_gone(server, helper), "the server or its helper outlived the interrupted test run"


def test_leftovers_of_an_earlier_run_on_the_same_test_database_are_killed() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    ours = "postgres://postgres@127.0.0.1:5432/test_leftover_check"
    left = subprocess.Popen(sleeper, env={**os.environ, "DATABASE_URL": ours})
    other = subprocess.Popen(sleeper, env={**os.environ, "DATABASE_URL": ours.replace("test_leftover", "test_other")})
    try:
        assert kill_leftovers("test_leftover_check", "localhost", 5432) == [left.pid]
        assert left.wait(10) == -signal.SIGKILL
        assert other.poll() is None, "a process on another database was killed"
    finally:
        for proc in (left, other):
            proc.kill()
            proc.wait(10)
