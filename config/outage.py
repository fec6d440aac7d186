"""Riding out a database outage: the connection pool's health check, and this process's memory of an outage.

Without these, a restarted server leaves the pool full of dead connections that it hands out one by one, and
during an outage every request waits the whole pool timeout for a connection while holding a web thread, so
even /healthz, which needs no database, queues behind them.

- ``check_pooled_connection`` is the pool's ``check``: each connection is tested before it is handed out, and
  one found dead has the pool test all its idle connections at once.
- ``MonitoredConnection`` is the pool's connection class: every attempt to open a connection tells ``OUTAGE``
  whether the server answered.
- ``OUTAGE`` lets config.middleware answer 503 at once while the server does not answer, and lets one request
  at a time (at most one a second) find out whether it is back.

Nothing here imports Django: settings.py names these in the pool's options.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from typing import Any, Self

import psycopg
from psycopg_pool import ConnectionPool

logger = logging.getLogger("config.database")


class Admission(enum.Enum):
    OPEN = "open"  # no outage known: go ahead
    PROBE = "probe"  # an outage is known; this request finds out whether the database is back
    REFUSE = "refuse"  # an outage is known and another request is finding out, or did a moment ago


class Outage:
    """What this process knows about the database being unreachable; shared by its threads.

    A failed attempt to open a connection starts an outage; a successful one ends it. While it lasts, requests
    are refused at once except for one probe at a time, no more often than every ``probe_every`` seconds, which
    asks the pool for a connection and so makes it try the server again.
    """

    def __init__(self, probe_every: float = 1.0) -> None:
        self.probe_every = probe_every
        self._lock = threading.Lock()
        self._since: float | None = None
        self._next_probe = 0.0
        self._probing = False
        self.error = ""  # the class of the last failure, for /readyz

    @property
    def down(self) -> bool:
        return self._since is not None

    def connect_failed(self, error: BaseException) -> None:
        with self._lock:
            self.error = type(error).__name__
            if self._since is not None:
                return
            self._since = time.monotonic()
            self._next_probe = self._since + self.probe_every
        logger.warning("database unreachable: %s", error)

    def connected(self) -> None:
        with self._lock:
            if self._since is None:
                return
            lasted = time.monotonic() - self._since
            self._since = None
        logger.warning("database reachable again after %.1fs", lasted)

    def admit(self) -> Admission:
        with self._lock:
            if self._since is None:
                return Admission.OPEN
            if self._probing or time.monotonic() < self._next_probe:
                return Admission.REFUSE
            self._probing = True
            return Admission.PROBE

    def probed(self, reachable: bool) -> None:
        """The probe that ``admit`` let through has its answer."""
        with self._lock:
            self._probing = False
            self._next_probe = time.monotonic() + self.probe_every
        if reachable:
            self.connected()


OUTAGE = Outage()


class MonitoredConnection(psycopg.Connection[Any]):
    """The pool's connections: each attempt to open one reports to ``OUTAGE`` whether the server answered."""

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:  # type: ignore[override]
        try:
            connection = super().connect(conninfo, **kwargs)
        except psycopg.OperationalError as exc:
            OUTAGE.connect_failed(exc)
            raise
        OUTAGE.connected()
        return connection


def check_pooled_connection(connection: psycopg.Connection[Any]) -> None:
    """The pool's ``check``, run on a connection before it is handed out; raises when it is dead.

    One dead connection means the server restarted or dropped its clients, so the pool then tests every idle
    connection at once: otherwise a request could draw them one after the other, with the pool's back-off
    (1 s, 2 s, ...) between each, and run out of time although the server is back.
    """
    try:
        ConnectionPool.check_connection(connection)
    except psycopg.Error:
        pool = getattr(connection, "_pool", None)  # set by psycopg_pool on the connections it hands out
        if isinstance(pool, ConnectionPool):
            pool.check()
        raise
