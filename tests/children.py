"""Child processes that cannot outlive the test run.

Servers and workers that the tests start hold connections to the test database. If one survived an
interrupted run (Ctrl-C, a pytest-timeout, SIGTERM or SIGKILL of pytest), the next run could not drop and
recreate that database and would error on every test. So every child started through ``popen``:

- leads its own process group (``start_new_session``), so that stopping it stops what it started too
  (gunicorn's workers, a command agent's program);
- gets SIGKILL from the kernel as soon as the test process dies, however it dies (Linux's parent-death
  signal, ``PR_SET_PDEATHSIG``), and exits at once if the test process died while it was being started;
- is killed with its whole group when the test process exits normally or by KeyboardInterrupt (atexit).

``kill_leftovers`` is the safety net for processes started some other way, or by a run before this one: at
the start of a run it kills every process whose DATABASE_URL names this run's test database.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_children: list[subprocess.Popen[Any]] = []


def _die_with(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        # The signal is sent when the thread that forked this child ends: tests start children from the
        # main thread, which lives as long as the run.
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def popen(args: Sequence[str | os.PathLike[str]], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(args, **kwargs)`` for a child that must die with the test run (see the module)."""
    kwargs.setdefault("start_new_session", True)
    proc: subprocess.Popen[Any] = subprocess.Popen(args, preexec_fn=_die_with(os.getpid()), **kwargs)
    _children.append(proc)
    return proc


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL to the child's process group (itself and whatever it started), if any of it is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def kill_all() -> None:
    """Kills every child still running, with its process group, and reaps it."""
    for proc in _children:
        if proc.poll() is None:
            kill_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    _children.clear()


atexit.register(kill_all)


def _environ(pid: str) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, _, value in pairs}


def kill_leftovers(database: str, host: str, port: int) -> list[int]:
    """SIGKILLs every process (other than this one and its ancestors) whose DATABASE_URL names ``database`` on
    ``host``:``port``: what an earlier, interrupted run of the same test database left behind. Returns their pids.
    """
    import dj_database_url

    spared = {os.getpid()}
    ancestor = os.getppid()
    while ancestor > 1 and ancestor not in spared:
        spared.add(ancestor)
        ancestor = _parent_of(ancestor)
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        url = _environ(entry.name).get("DATABASE_URL", "")
        if not url.startswith(("postgres://", "postgresql://")):
            continue
        try:
            config = dj_database_url.parse(url)
        except ValueError:
            continue
        if config["NAME"] == database and _same_host(config["HOST"], host) and int(config["PORT"] or 5432) == port:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


_LOCAL = {"", "localhost", "127.0.0.1", "::1"}


def _same_host(one: str, other: str) -> bool:
    return one == other or (one in _LOCAL and other in _LOCAL)


def _parent_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 1
    # The command name (field 2) is in parentheses and may contain spaces: the parent pid follows it.
    return int(stat.rsplit(")", 1)[1].split()[1])
