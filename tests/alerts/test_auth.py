"""Who may post alerts: the bearer token, Grafana's HMAC signature with a fresh timestamp, or both."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.core.checks import run_checks

from alerts.models import AlertDelivery
from tests.alerts.conftest import HMAC_SECRET, TIMESTAMP_HEADER, fixture, post, signed_headers

pytestmark = pytest.mark.django_db

BODY = json.dumps(fixture("alertmanager_firing")).encode()


@pytest.fixture
def hmac_only(settings: Any) -> Any:
    settings.WEBHOOK_TOKEN = ""
    settings.WEBHOOK_HMAC_SECRET = HMAC_SECRET
    return settings


def test_it_accepts_the_right_bearer_token(synced: None) -> None:
    assert post(raw=BODY).status_code == 200


@pytest.mark.parametrize("token", [None, "wrong-token", "test-webhook-token-but-longer"])
def test_it_refuses_a_missing_or_wrong_token_and_stores_nothing(synced: None, token: str | None) -> None:
    response = post(raw=BODY, token=token)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "authentication failed" in response.json()["detail"]
    assert not AlertDelivery.objects.exists()


def test_it_refuses_another_authorization_scheme(synced: None) -> None:
    response = post(raw=BODY, token=None, headers={"Authorization": "Basic dGVzdDp0ZXN0"})
    assert response.status_code == 401


def test_it_accepts_a_good_signature(synced: None, hmac_only: Any) -> None:
    assert post(raw=BODY, token=None, headers=signed_headers(BODY)).status_code == 200


def test_it_accepts_the_signature_header_grafana_falls_back_to(synced: None, hmac_only: Any) -> None:
    headers = signed_headers(BODY)
    headers["X-Grafana-Alert-Signature"] = headers.pop("X-Grafana-Alerting-Signature")
    assert post(raw=BODY, token=None, headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"X-Grafana-Alerting-Signature": ""}, "missing signature"),
        ({"X-Grafana-Alerting-Signature": "0" * 64}, "does not match"),
        ({TIMESTAMP_HEADER: ""}, "missing timestamp"),
        ({TIMESTAMP_HEADER: "yesterday"}, "not a Unix time"),
    ],
)
def test_it_refuses_a_bad_signature(synced: None, hmac_only: Any, change: dict[str, str], reason: str) -> None:
    headers = {**signed_headers(BODY), **change}
    response = post(raw=BODY, token=None, headers={k: v for k, v in headers.items() if v})
    assert response.status_code == 401
    assert reason in response.json()["detail"]


def test_it_refuses_a_signature_by_another_secret(synced: None, hmac_only: Any) -> None:
    response = post(raw=BODY, token=None, headers=signed_headers(BODY, secret="another-secret"))
    assert response.status_code == 401


def test_it_refuses_a_signature_over_another_body(synced: None, hmac_only: Any) -> None:
    tampered = BODY.replace(b"critical", b"info")
    response = post(raw=tampered, token=None, headers=signed_headers(BODY))
    assert response.status_code == 401


@pytest.mark.parametrize("offset", [-301, 301])
def test_it_refuses_a_stale_or_future_timestamp(synced: None, hmac_only: Any, offset: int) -> None:
    response = post(raw=BODY, token=None, headers=signed_headers(BODY, at=time.time() + offset))
    assert response.status_code == 401
    assert "stale timestamp" in response.json()["detail"]


def test_a_timestamp_within_the_window_passes(synced: None, hmac_only: Any) -> None:
    assert post(raw=BODY, token=None, headers=signed_headers(BODY, at=time.time() - 290)).status_code == 200


def test_without_a_timestamp_header_setting_the_body_alone_is_signed(synced: None, hmac_only: Any) -> None:
    hmac_only.WEBHOOK_TIMESTAMP_HEADER = ""
    from alerts.auth import sign

    headers = {"X-Grafana-Alerting-Signature": sign(HMAC_SECRET, BODY)}
    assert post(raw=BODY, token=None, headers=headers).status_code == 200


def test_with_both_configured_both_must_pass(synced: None, settings: Any) -> None:
    settings.WEBHOOK_HMAC_SECRET = HMAC_SECRET
    assert post(raw=BODY, headers=signed_headers(BODY)).status_code == 200
    assert post(raw=BODY).status_code == 401  # token only
    assert post(raw=BODY, token=None, headers=signed_headers(BODY)).status_code == 401  # signature only
    assert post(raw=BODY, token="wrong", headers=signed_headers(BODY)).status_code == 401


def test_with_no_secret_configured_anyone_may_post(synced: None, settings: Any) -> None:
    settings.WEBHOOK_TOKEN = ""
    assert post(raw=BODY, token=None).status_code == 200


def test_a_system_check_warns_when_production_has_no_webhook_secret(settings: Any) -> None:
    settings.DEBUG = False
    settings.WEBHOOK_TOKEN = ""
    assert "alerts.W001" in [m.id for m in run_checks()]
    settings.WEBHOOK_HMAC_SECRET = HMAC_SECRET
    assert "alerts.W001" not in [m.id for m in run_checks()]
    settings.WEBHOOK_HMAC_SECRET = ""
    settings.DEBUG = True
    assert "alerts.W001" not in [m.id for m in run_checks()]
