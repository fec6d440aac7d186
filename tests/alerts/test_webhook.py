"""What a notification group becomes: one run of alert-notification with the context the notifier needs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from alerts.models import AlertDelivery, AlertEvent
from tests.alerts.conftest import fixture, post, variant

pytestmark = pytest.mark.django_db


def test_grafana_firing_starts_one_run_with_the_seed_context(check_webhook: Any) -> None:
    run = check_webhook(
        "grafana_firing",
        {
            "source": "grafana",
            "status": "firing",
            "severity": "critical",  # the most severe of critical and warning
            "alert_name": "WorkflowFailureRate, AgentFailureSpike",
            "summary": "High workflow failure rate (23%)",
            "message": "More than 10% of workflows are failing in the last 5 minutes",
            "dashboard_url": "http://localhost:3001/d/workflow-overview?orgId=1",
            "runbook_url": "http://localhost:9002/runbooks/workflow-failure-rate",
            "silence_url": "http://localhost:3001/alerting/silence/new?alertmanager=grafana&matcher=alertname%3DWorkflowFailureRate&orgId=1",
            "labels": {"grafana_folder": "CommandCenter"},
            "group_key": '{}/{grafana_folder="CommandCenter"}:{grafana_folder="CommandCenter"}',
            "external_url": "http://localhost:3001/",
            "alert_count": 2,
            "new_alert_count": 2,
        },
    )
    assert run.workflow.slug == "alert-notification"
    assert [a["fingerprint"] for a in run.context["alerts"]] == ["6a1c3f0e9b2d47aa", "c07d2e5a11f98b34"]
    assert run.context["alerts"][0]["values"] == {"B": 0.23, "C": 1}
    assert "values" not in run.context["alerts"][1]  # values: null
    assert run.context["timestamp"]


def test_alertmanager_firing_starts_one_run_and_links_a_silence(check_webhook: Any) -> None:
    run = check_webhook(
        "alertmanager_firing",
        {
            "source": "alertmanager",
            "status": "firing",
            "severity": "critical",
            "alert_name": "ServiceDown",
            "summary": "Orchestration service is down",
            "message": "The orchestration service has been unavailable for 1 minute",
            "group_key": '{}:{alertname="ServiceDown"}',
            "external_url": "http://alertmanager:9093",
            "dashboard_url": "",
        },
    )
    assert run.context["silence_url"] == (
        "http://alertmanager:9093/#/silences/new?filter=%7Balertname%3D%22ServiceDown%22%7D"
    )
    assert run.context["source_url"].startswith("http://prometheus:9090/graph")
    assert run.context["alerts"][0]["startsAt"] == "2026-11-28T10:02:11.123000Z"


def test_the_response_lists_the_run_and_the_delivery_keeps_the_request(synced: None) -> None:
    response = post(fixture("grafana_firing"), headers={"User-Agent": "Grafana/12.1"})
    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"workflowRunIds", "deliveryId", "deduplicated"}
    delivery = AlertDelivery.objects.get(pk=body["deliveryId"])
    assert delivery.source == "grafana" and delivery.status == "firing" and delivery.alert_count == 2
    assert delivery.http_status == 200 and delivery.attempts == 1
    assert delivery.headers["User-Agent"] == "Grafana/12.1"
    assert "Authorization" not in delivery.headers
    assert fixture("grafana_firing") == __import__("json").loads(delivery.body)
    assert AlertEvent.objects.filter(delivery=delivery).count() == 2


@pytest.mark.parametrize(
    ("labels", "status", "expected"),
    [
        ({"severity": "warning"}, "firing", "warning"),
        ({"severity": "Critical"}, "resolved", "critical"),
        ({}, "firing", "critical"),
        ({}, "resolved", "warning"),
    ],
)
def test_severity_comes_from_the_label_else_from_the_status(
    check_webhook: Any, labels: dict[str, str], status: str, expected: str
) -> None:
    payload = fixture("alertmanager_firing")
    payload["status"] = status
    payload["commonLabels"] = {"alertname": "ServiceDown", **labels}
    payload["alerts"][0]["status"] = status
    payload["alerts"][0]["labels"] = {"alertname": "ServiceDown", **labels}
    check_webhook("", {"severity": expected}, payload=payload)


def test_the_runbook_comes_from_the_map_when_no_annotation_names_one(check_webhook: Any, settings: Any) -> None:
    settings.RUNBOOK_URL_MAP = {"ServiceDown": "deploy/runbooks/service-down.md"}
    settings.RUNBOOK_BASE_URL = "https://git.example.test/cc/blob/main"
    check_webhook(
        "alertmanager_firing", {"runbook_url": "https://git.example.test/cc/blob/main/deploy/runbooks/service-down.md"}
    )


def test_a_relative_runbook_annotation_is_joined_to_the_base_url(check_webhook: Any, settings: Any) -> None:
    settings.RUNBOOK_BASE_URL = "https://git.example.test/cc/blob/main"
    payload = fixture("alertmanager_firing")
    payload["commonAnnotations"]["runbook_url"] = "deploy/runbooks/service-down.md"
    check_webhook(
        "", {"runbook_url": "https://git.example.test/cc/blob/main/deploy/runbooks/service-down.md"}, payload=payload
    )


def test_an_allowlisted_workflow_label_selects_that_workflow(check_webhook: Any, settings: Any) -> None:
    settings.ALERT_WORKFLOW_ALLOWLIST = ["scan-and-notify"]
    run = check_webhook("grafana_resolved", {"status": "resolved"})
    assert run.workflow.slug == "scan-and-notify"


def test_a_workflow_label_outside_the_allowlist_is_ignored(check_webhook: Any, settings: Any) -> None:
    settings.ALERT_WORKFLOW_ALLOWLIST = ["test-failure"]
    run = check_webhook("grafana_resolved", {"status": "resolved"})
    assert run.workflow.slug == "alert-notification"


def test_alerts_that_disagree_on_the_workflow_label_use_the_default(check_webhook: Any, settings: Any) -> None:
    settings.ALERT_WORKFLOW_ALLOWLIST = ["scan-and-notify"]
    run = check_webhook("grafana_firing", {})  # only one of its two alerts has workflow=scan-and-notify
    assert run.workflow.slug == "alert-notification"


def test_unicode_and_truncated_groups_are_kept_as_sent(check_webhook: Any) -> None:
    run = check_webhook(
        "grafana_unicode_truncated",
        {
            "alert_name": "Störung Zählerstand ⚠",
            "summary": "Zähler über Grenzwert — 🚨 prüfen",
            "message": "Línea 1\nLínea 2 «quoted»",
            "severity": "warning",
            "truncated_alerts": 7,
            "labels": {
                "alertname": "Störung Zählerstand ⚠",
                "severity": "warning",
                "team": "ops-東京",
                "note": "@everyone <b>&</b>",
            },
        },
    )
    # Nanoseconds and an offset, as Go writes them, become an exact UTC instant (to the microsecond).
    assert run.context["alerts"][0]["startsAt"] == "2026-11-28T10:00:00.123456Z"


def test_a_group_of_100_alerts_starts_one_run(check_webhook: Any) -> None:
    payload = fixture("grafana_firing")
    template = payload["alerts"][0]
    payload["alerts"] = []
    for i in range(100):
        alert = copy.deepcopy(template)
        alert["fingerprint"] = f"fp{i:03d}"
        alert["labels"]["instance"] = f"web-{i}"
        payload["alerts"].append(alert)
    run = check_webhook("", {"alert_count": 100, "new_alert_count": 100}, payload=payload)
    assert AlertEvent.objects.filter(runs=run).count() == 100


def test_an_alert_without_a_fingerprint_gets_one_from_its_labels(check_webhook: Any) -> None:
    payload = variant("alertmanager_firing")
    del payload["alerts"][0]["fingerprint"]
    run = check_webhook("", {}, payload=payload)
    fingerprint = run.context["alerts"][0]["fingerprint"]
    assert len(fingerprint) == 16
    assert post(payload).json()["workflowRunIds"] == []  # the same labels: the same alert


def test_a_missing_workflow_is_a_processing_error_that_can_be_replayed(synced: None) -> None:
    from workflows.models import Workflow

    Workflow.objects.filter(slug="alert-notification").update(slug="renamed")
    response = post(fixture("alertmanager_firing"))
    assert response.status_code == 503
    delivery = AlertDelivery.objects.get(pk=response.json()["deliveryId"])
    assert delivery.outcome == AlertDelivery.Outcome.ERROR
    assert "workflow 'alert-notification' does not exist" in delivery.error
    assert not AlertEvent.objects.exists()  # nothing claimed, so a replay starts over

    Workflow.objects.filter(slug="renamed").update(slug="alert-notification")
    from alerts.processing import replay

    result = replay(delivery)
    assert result.status == 200 and len(result.body["workflowRunIds"]) == 1
    delivery.refresh_from_db()
    assert delivery.outcome == AlertDelivery.Outcome.PROCESSED and delivery.attempts == 2 and delivery.error == ""
