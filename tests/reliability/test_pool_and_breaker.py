"""The pool's health check and the web tier's outage breaker (config/outage.py), against a real PostgreSQL.

The end-to-end versions (gunicorn, a cluster that is stopped and restarted) are in test_database_outage.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.http import HttpResponse
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from psycopg_pool import ConnectionPool

from config.middleware import DatabaseUnavailableMiddleware
from config.outage import OUTAGE, Admission, MonitoredConnection, Outage, check_pooled_connection
from tests.reliability.conftest import free_port


def conninfo() -> str:
    s = connection.settings_dict
    return f"postgresql://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def terminate(pids: list[int]) -> None:
    with psycopg.connect(conninfo(), autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.fixture
def outage() -> Iterator[Outage]:
    """The process-wide breaker, reset before and after the test."""
    OUTAGE.connected()
    yield OUTAGE
    OUTAGE.connected()


@pytest.mark.django_db(transaction=True)
def test_after_a_restart_the_pool_hands_out_no_dead_connection_and_does_not_wait_for_each(outage: Outage) -> None:
    pool = ConnectionPool(
        conninfo(), min_size=0, max_size=4, timeout=2.0, check=check_pooled_connection, open=True, reconnect_timeout=2
    )
    try:
        held = [pool.getconn() for _ in range(4)]
        pids = [conn.info.backend_pid for conn in held]
        for conn in held:
            pool.putconn(conn)
        terminate(pids)  # what a restart does to every idle connection of the pool
        time.sleep(0.2)
        started = time.monotonic()
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid not in pids
        # Without the sweep of the idle connections, the pool's back-off between dead ones (1 s, 2 s, ...) shows.
        assert time.monotonic() - started < 0.9
        assert pool.get_stats()["connections_lost"] == 4
    finally:
        pool.close()


@pytest.mark.django_db(transaction=True)
def test_a_refused_connection_starts_an_outage_and_a_successful_one_ends_it(outage: Outage) -> None:
    with pytest.raises(psycopg.OperationalError):
        MonitoredConnection.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x", connect_timeout=2)
    assert outage.down
    MonitoredConnection.connect(conninfo()).close()
    assert not outage.down


def test_while_down_one_request_at_a_time_probes_at_most_every_interval() -> None:
    breaker = Outage(probe_every=0.2)
    assert breaker.admit() is Admission.OPEN
    breaker.connect_failed(OSError("refused"))
    assert breaker.admit() is Admission.REFUSE  # the first probe waits for the interval
    time.sleep(0.25)
    assert breaker.admit() is Admission.PROBE
    assert breaker.admit() is Admission.REFUSE  # one probe at a time
    breaker.probed(reachable=False)
    assert breaker.admit() is Admission.REFUSE
    time.sleep(0.25)
    assert breaker.admit() is Admission.PROBE
    breaker.probed(reachable=True)
    assert breaker.admit() is Admission.OPEN and not breaker.down


@pytest.mark.django_db
def test_during_an_outage_requests_get_503_at_once_without_touching_the_database(
    outage: Outage, api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outage, "probe_every", 60.0)
    outage.connect_failed(OSError("refused"))
    with CaptureQueriesContext(connection) as queries:
        answer = api.get("/api/runs")
        page = Client().get("/admin/login/")
        ready = Client().get("/readyz")
    assert len(queries) == 0
    assert answer.status_code == 503 and answer.json()["error"] == "database_unavailable"
    assert answer["Retry-After"] == "5" and answer["Cache-Control"] == "no-store"
    assert page.status_code == 503 and "database is unreachable" in page.content.decode()
    assert ready.status_code == 503 and ready.json()["database"] == "unreachable: OSError"
    # What needs no database is not held back.
    assert Client().get("/healthz").status_code == 200
    passed = DatabaseUnavailableMiddleware(lambda request: HttpResponse("scraped"))
    assert passed(RequestFactory().get("/metrics")).content == b"scraped"


@pytest.mark.django_db
def test_the_probe_that_finds_the_database_back_ends_the_outage(outage: Outage, api: Any) -> None:
    outage.connect_failed(OSError("refused"))
    outage.probed(reachable=False)  # the last probe failed just now ...
    assert api.get("/api/runs").status_code == 503
    outage._next_probe = 0.0  # ... and the next one is due
    assert api.get("/api/runs").status_code == 200
    assert not outage.down
    assert api.get("/api/runs").status_code == 200
