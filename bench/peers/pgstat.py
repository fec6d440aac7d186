"""Commits per run, counted by PostgreSQL itself: ``xact_commit`` of one database in ``pg_stat_database``.

Shared by our side and the peers' drivers (psycopg only, no service imports), so both are counted alike.
Only the named database is counted, so other databases on the same server (other benchmarks, other
applications) do not enter the figure.

A backend adds its counters to ``pg_stat_database`` when it exits, and while it keeps working at most once a
second (PostgreSQL 15's cumulative statistics); a backend that falls idle may hold them for up to 10 s. So a
reading is taken with no client of the database connected, after a pause: the "before" reading before the
workers start, the "after" one once they and the driver's own connections are gone.

What else commits in that window, and how it is treated:

- the workers' start-up, their idle polling and maintenance, their shutdown: measured by starting the same
  workers again with nothing to do, for as long as the batch took (at most 10 s, scaled up to the batch's
  time), and subtracted; ``commits_total`` keeps the figure before the subtraction;
- each new connection's start-up transaction (one commit), the driver's included: counted, a few per batch;
- the driver's triggers (or enqueues): counted, they are part of what a run costs;
- the driver's polling for completion: not counted, it ends every poll with ROLLBACK;
- autovacuum and autoanalyze on the database's tables: counted, a few transactions per batch at most.

Every read-only statement a client runs in autocommit mode is a commit here too, so this is an upper bound of
the commits that write. For workers that poll their queue often (DBOS Transact every 10 ms), idle polling is
most of what is subtracted, and on a loaded machine busy workers poll less often than idle ones: there
``per_run`` is a lower bound and ``total_per_run`` an upper one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

FLUSH_SECONDS = 1.2  # past PostgreSQL's one-second minimum between two flushes of a backend's statistics
IDLE_WINDOW_SECONDS = 10.0


def xact_commit(admin_conninfo: str, dbname: str) -> int:
    """``admin_conninfo`` names another database (``postgres``): a connection to ``dbname`` would count."""
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (dbname,)).fetchone()
    return int(row[0]) if row else 0


def count_commits(
    read: Callable[[], int],
    workers: Callable[[], AbstractContextManager[Any]],
    batch: Callable[[], dict[str, Any]],
    runs: int,
) -> dict[str, Any]:
    """Runs ``batch`` (which returns its figures, ``seconds`` among them) inside ``workers()`` and counts commits.

    ``batch`` must leave no connection of its own open when it returns. The returned dict is the batch's
    figures with ``commits`` added: per run, in total, and what the same workers spent idle.
    """
    time.sleep(FLUSH_SECONDS)
    before = read()
    with workers():
        figures = batch()
    time.sleep(FLUSH_SECONDS)
    after = read()
    seconds = float(figures["seconds"])
    window = max(0.5, min(seconds, IDLE_WINDOW_SECONDS))
    with workers():
        time.sleep(window)
    time.sleep(FLUSH_SECONDS)
    idle = (read() - after) * seconds / window
    return {
        **figures,
        "commits": {
            "per_run": (after - before - idle) / runs,
            "total": after - before,
            "idle_workers_same_time": round(idle, 1),
            "idle_window_seconds": round(window, 2),
            "total_per_run": (after - before) / runs,
        },
    }
