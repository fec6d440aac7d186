"""Duplicates (a Grafana HA pair, a replayed request) start no second run, even at the same instant."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection

from alerts.models import AlertDelivery, AlertEvent
from tests.alerts.conftest import HMAC_SECRET, fixture, post, signed_headers
from workflows.models import WorkflowRun


@pytest.mark.django_db
def test_the_second_copy_from_an_ha_pair_starts_no_run(synced: None, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded: list[tuple[str, str, str]] = []
    monkeypatch.setattr(
        "observability.metrics.record_webhook_alert",
        lambda *, source, status, outcome: recorded.append((source, status, outcome)),
    )
    first = post(fixture("grafana_firing")).json()
    second = post(fixture("grafana_firing")).json()
    assert len(first["workflowRunIds"]) == 1
    assert second["workflowRunIds"] == [] and second["deduplicated"] == 2
    assert WorkflowRun.objects.count() == 1
    assert AlertDelivery.objects.get(pk=second["deliveryId"]).outcome == AlertDelivery.Outcome.DEDUPLICATED
    assert recorded == [("grafana", "firing", "triggered")] * 2 + [("grafana", "firing", "deduplicated")] * 2
    assert sorted(AlertEvent.objects.values_list("duplicates", flat=True)) == [1, 1]


@pytest.mark.django_db
def test_a_replayed_signed_request_starts_no_run(synced: None, settings: Any) -> None:
    settings.WEBHOOK_HMAC_SECRET = HMAC_SECRET
    body = json.dumps(fixture("alertmanager_firing")).encode()
    headers = signed_headers(body)
    assert len(post(raw=body, headers=headers).json()["workflowRunIds"]) == 1
    again = post(raw=body, headers=headers)
    assert again.status_code == 200 and again.json()["workflowRunIds"] == []


@pytest.mark.django_db
def test_a_group_with_one_new_alert_starts_a_run(synced: None) -> None:
    payload = fixture("grafana_firing")
    first_only = {**payload, "alerts": payload["alerts"][:1]}
    post(first_only)
    body = post(payload).json()
    assert len(body["workflowRunIds"]) == 1 and body["deduplicated"] == 1
    run = WorkflowRun.objects.get(id=body["workflowRunIds"][0])
    assert run.context["alert_count"] == 2 and run.context["new_alert_count"] == 1


@pytest.mark.django_db
def test_a_repeat_after_the_window_notifies_again(synced: None) -> None:
    post(fixture("alertmanager_firing"))
    AlertEvent.objects.update(notified_at=AlertEvent.objects.get().notified_at - timedelta(seconds=3601))
    assert len(post(fixture("alertmanager_firing")).json()["workflowRunIds"]) == 1
    assert AlertEvent.objects.get().runs.count() == 2


@pytest.mark.django_db
def test_firing_and_resolved_of_one_alert_are_different_alerts(synced: None) -> None:
    assert len(post(fixture("grafana_firing")).json()["workflowRunIds"]) == 1
    assert len(post(fixture("grafana_resolved")).json()["workflowRunIds"]) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_start_exactly_one_run(synced: None) -> None:
    body = json.dumps(fixture("grafana_firing")).encode()
    barrier = threading.Barrier(4)
    answers: list[Any] = []

    def deliver() -> None:
        try:
            barrier.wait()
            response = post(raw=body)
            answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [status for status, _ in answers] == [200] * 4
    started = [body["workflowRunIds"] for _, body in answers if body["workflowRunIds"]]
    assert len(started) == 1, answers
    assert WorkflowRun.objects.count() == 1
    assert AlertDelivery.objects.count() == 4
    assert AlertDelivery.objects.filter(outcome=AlertDelivery.Outcome.DEDUPLICATED).count() == 3
