"""Every bad request gets a clear 4xx, never a 500, and the payload is kept wherever it could be read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from alerts.models import AlertDelivery
from tests.alerts.conftest import URL, fixture, post, variant

pytestmark = pytest.mark.django_db


def stored(response: Any) -> AlertDelivery:
    return AlertDelivery.objects.get(pk=response.json()["deliveryId"])


def test_malformed_json_is_400_and_the_body_is_kept(synced: None) -> None:
    response = post(raw=b'{"version": "1", "alerts": [')
    assert response.status_code == 400
    assert response.json()["detail"].startswith("malformed JSON")
    delivery = stored(response)
    assert delivery.outcome == AlertDelivery.Outcome.REJECTED and delivery.http_status == 400
    assert delivery.body == '{"version": "1", "alerts": ['
    assert "malformed JSON" in delivery.error


def test_a_body_that_is_not_utf8_is_400(synced: None) -> None:
    response = post(raw=b'{"version": "\xff\xfe"}')
    assert response.status_code == 400
    assert "not valid UTF-8" in response.json()["detail"]
    assert stored(response).body == '{"version": "\ufffd\ufffd"}'


def test_a_nul_character_is_kept_without_breaking_the_database(synced: None) -> None:
    payload = fixture("alertmanager_firing")
    payload["alerts"][0]["annotations"]["summary"] = "zero\u0000byte"
    response = post(payload)
    assert response.status_code == 200
    assert stored(response).runs.get().context["alerts"][0]["annotations"]["summary"] == "zero\ufffdbyte"


def test_a_wrong_content_type_is_415_and_the_body_is_kept(synced: None) -> None:
    response = post(raw=b"status=firing", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    assert stored(response).body == "status=firing"


def test_json_with_a_charset_is_fine(synced: None) -> None:
    assert post(fixture("alertmanager_firing"), content_type="application/json; charset=utf-8").status_code == 200


def test_a_body_over_the_webhook_limit_is_413(synced: None, settings: Any) -> None:
    settings.WEBHOOK_MAX_BODY_BYTES = 2048
    payload = fixture("grafana_firing")
    payload["message"] = "x" * 4096
    response = post(payload)
    assert response.status_code == 413
    assert "exceeds the limit of 2048 bytes" in response.json()["detail"]
    assert not AlertDelivery.objects.exists()  # never read, so nothing to keep


def test_get_is_not_allowed(synced: None) -> None:
    from django.test import Client

    assert Client().get(URL).status_code == 405


@pytest.mark.parametrize(
    ("mutate", "field", "detail"),
    [
        (lambda p: p.update(version="3"), "version", "version must be '1' (Grafana) or '4' (Alertmanager), not '3'"),
        (lambda p: p.pop("version"), "version", "version is required"),
        (lambda p: p.update(status="pending"), "status", "status must be 'firing' or 'resolved', not 'pending'"),
        (lambda p: p.update(alerts={}), "alerts", "alerts must be an array, not an object"),
        (lambda p: p.update(alerts=[]), "alerts", "alerts must contain at least one alert"),
        (lambda p: p["alerts"].append("x"), "alerts[2]", "alerts[2] must be a JSON object, not a string"),
        (
            lambda p: p["alerts"][0].update(status="ok"),
            "alerts[0].status",
            "alerts[0].status must be 'firing' or 'resolved', not 'ok'",
        ),
        (lambda p: p["alerts"][1].pop("startsAt"), "alerts[1].startsAt", "alerts[1].startsAt is required"),
        (
            lambda p: p["alerts"][0].update(startsAt="yesterday"),
            "alerts[0].startsAt",
            "alerts[0].startsAt must be an RFC 3339 time, not 'yesterday'",
        ),
        (
            lambda p: p["alerts"][0]["labels"].update(severity=3),
            "alerts[0].labels.severity",
            "alerts[0].labels.severity must be a string, not a number",
        ),
        (
            lambda p: p["alerts"][1].update(values=[1]),
            "alerts[1].values",
            "alerts[1].values must be an object or null, not an array",
        ),
        (lambda p: p.update(commonLabels=None, groupLabels="x"), "groupLabels", "groupLabels must be an object"),
        (lambda p: p.update(truncatedAlerts=-1), "truncatedAlerts", "truncatedAlerts must be at least 0"),
    ],
)
def test_a_schema_violation_is_422_naming_the_field(synced: None, mutate: Any, field: str, detail: str) -> None:
    payload = fixture("grafana_firing")
    mutate(payload)
    response = post(payload)
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["field"] == field
    assert body["detail"].startswith(detail)
    delivery = stored(response)
    assert delivery.outcome == AlertDelivery.Outcome.REJECTED and delivery.http_status == 422
    assert json.loads(delivery.body) == payload
    assert not delivery.runs.exists()


def test_a_json_array_is_422(synced: None) -> None:
    response = post([1, 2])
    assert response.status_code == 422
    assert response.json()["detail"] == "body must be a JSON object, not an array"


def test_an_alertmanager_v3_payload_is_refused_with_the_version(synced: None) -> None:
    response = post(variant("alertmanager_firing", version="3", groupKey=666))
    assert response.status_code == 422
    assert response.json()["field"] == "version"
