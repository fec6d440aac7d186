"""Failures on the service's side: 503 only when retrying can help, 500 otherwise; both stored, both replayable.

The database's own failures are real: a table locked by another session past lock_timeout (transient, as an
unreachable database is), and a trigger that raises (a failure that the same request hits again).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection

from alerts.models import AlertDelivery, AlertEvent
from alerts.processing import replay
from tests.alerts.conftest import fixture, post
from workflows.models import WorkflowRun

pytestmark = pytest.mark.django_db


@contextmanager
def locked(table: str) -> Iterator[None]:
    """Another session holds ``table`` exclusively; this one gives up waiting for it after 300 ms."""
    settings = connection.settings_dict
    other = psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
    )
    try:
        other.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '300ms'")
        yield
    finally:
        other.rollback()
        other.close()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")


def test_a_lock_timeout_is_503_and_the_stored_delivery_replays_to_its_run(synced: None) -> None:
    with locked("observability_alertevent"):
        response = post(fixture("alertmanager_firing"))
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the database is unavailable, retry later: OperationalError")
    delivery = AlertDelivery.objects.get(pk=response.json()["deliveryId"])
    assert delivery.outcome == AlertDelivery.Outcome.ERROR and delivery.http_status == 503
    assert "lock timeout" in delivery.error
    assert not AlertEvent.objects.exists() and not WorkflowRun.objects.exists()

    result = replay(delivery)
    assert result.status == 200
    (run_id,) = result.body["workflowRunIds"]
    delivery.refresh_from_db()
    assert delivery.outcome == AlertDelivery.Outcome.PROCESSED and list(delivery.runs.all()) == [
        WorkflowRun.objects.get(id=run_id)
    ]


def test_a_database_that_cannot_store_the_delivery_is_503_and_keeps_nothing(synced: None) -> None:
    with locked("observability_alertdelivery"):
        response = post(fixture("alertmanager_firing"))
    assert response.status_code == 503
    assert "retry later" in response.json()["detail"] and "deliveryId" not in response.json()
    assert not AlertDelivery.objects.exists()
    assert post(fixture("alertmanager_firing")).status_code == 200  # the sender's retry


def test_an_unforeseen_failure_is_500_stored_with_its_error_and_replayable(synced: None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_runs() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'runs refused by a trigger'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER refuse_runs BEFORE INSERT ON workflows_workflowrun "
            "FOR EACH ROW EXECUTE FUNCTION refuse_runs()"
        )
    response = post(fixture("alertmanager_firing"))
    assert response.status_code == 500
    assert "runs refused by a trigger" in response.json()["detail"]
    delivery = AlertDelivery.objects.get(pk=response.json()["deliveryId"])
    assert delivery.outcome == AlertDelivery.Outcome.ERROR and delivery.http_status == 500
    assert delivery.error.startswith("ProgrammingError: runs refused by a trigger")

    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER refuse_runs ON workflows_workflowrun")
    result = replay(delivery)
    assert result.status == 200 and len(result.body["workflowRunIds"]) == 1
