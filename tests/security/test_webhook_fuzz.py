"""Hostile input to POST /webhooks/grafana: malformed, huge, deeply nested, NUL bytes, wrong content types.

Never a 5xx; anything that is not a valid alert payload gets a 4xx; every authenticated request within the
size limit is stored as received (the raw payload is kept), whatever it contains.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.models import AlertDelivery

pytestmark = pytest.mark.django_db

TOKEN = "fuzz-webhook-token"
URL = "/webhooks/grafana"
FIXTURES = Path(__file__).resolve().parent.parent / "alerts" / "fixtures"
LIMIT = 64 * 1024
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_MAX_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


@pytest.fixture(autouse=True)
def webhook(settings: Any, synced: None) -> None:
    settings.WEBHOOK_TOKEN = TOKEN
    settings.WEBHOOK_HMAC_SECRET = ""
    settings.WEBHOOK_MAX_BODY_BYTES = LIMIT
    settings.ALERT_WORKFLOW_ALLOWLIST = []


def post(body: bytes, content_type: str = "application/json", token: str | None = TOKEN) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client().generic("POST", URL, data=body, content_type=content_type, headers=headers)


def check(body: bytes, content_type: str = "application/json") -> int:
    """POSTs; asserts no 5xx and that the delivery was kept as received. Returns the status."""
    before = AlertDelivery.objects.count()
    response = post(body, content_type)
    assert response.status_code < 500, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    if len(body) <= LIMIT:
        assert AlertDelivery.objects.count() == before + 1
        kept = AlertDelivery.objects.order_by("-id").first()
        assert kept is not None
        assert kept.body == body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    else:
        assert response.status_code == 413
    return response.status_code


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)


@FUZZ
@given(body=st.binary(max_size=2048))
def test_arbitrary_bytes(body: bytes) -> None:
    assert check(body) in (400, 415, 422)


@FUZZ
@given(value=json_values)
def test_arbitrary_json(value: Any) -> None:
    assert 400 <= check(json.dumps(value).encode()) < 500


@FUZZ
@given(
    name=st.sampled_from(["grafana_firing", "alertmanager_firing", "grafana_resolved"]),
    path=st.lists(st.sampled_from(["alerts", 0, "labels", "annotations", "status", "startsAt", "version"]), max_size=3),
    value=json_values,
)
def test_a_valid_payload_with_one_field_replaced(name: str, path: list[Any], value: Any) -> None:
    payload: Any = copy.deepcopy(fixture(name))
    target = payload
    for key in path[:-1]:
        try:
            target = target[key]
        except (KeyError, IndexError, TypeError):
            break
    with contextlib.suppress(IndexError, TypeError):
        target[path[-1] if path else "version"] = value
    status = check(json.dumps(payload).encode())
    assert status == 200 or 400 <= status < 500


@FUZZ
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_nul_bytes_and_control_characters_inside_a_payload(text: str) -> None:
    payload = fixture("grafana_firing")
    payload["alerts"][0]["labels"]["alertname"] = "\x00" + text + "\x00"
    payload["commonLabels"] = {"x\x00y": text}
    status = check(json.dumps(payload).encode())
    assert status == 200 or 400 <= status < 500


@pytest.mark.parametrize(
    ("kind", "depth"),
    [
        ("list", 100),
        ("list", 900),
        ("list", 20_000),
        ("object", 100),
        ("object", 900),
        ("object", 10_000),
    ],
)
def test_deeply_nested_json(kind: str, depth: int) -> None:
    body = ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)
    assert 400 <= check(body.encode()) < 500


def test_a_deeply_nested_value_inside_a_valid_payload() -> None:
    payload = fixture("grafana_firing")
    payload["alerts"][0]["annotations"]["nested"] = "PLACEHOLDER"
    body = json.dumps(payload).replace('"PLACEHOLDER"', "[" * 5000 + "]" * 5000).encode()
    status = check(body)
    assert status == 200 or 400 <= status < 500


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", "*/*"],
)
def test_wrong_content_types_are_415_and_kept(content_type: str) -> None:
    assert check(json.dumps(fixture("grafana_firing")).encode(), content_type) == 415


def test_a_huge_body_is_413_and_not_read() -> None:
    assert check(b'{"a":"' + b"x" * (LIMIT + 10) + b'"}') == 413


def test_a_body_just_under_the_limit() -> None:
    payload = fixture("grafana_firing")
    payload["message"] = ""
    room = LIMIT - len(json.dumps(payload).encode())
    payload["message"] = "y" * room
    body = json.dumps(payload).encode()
    assert len(body) == LIMIT
    status = check(body)
    assert status == 200 or 400 <= status < 500


def test_many_alerts_in_one_group() -> None:
    payload = fixture("grafana_firing")
    alert = payload["alerts"][0]
    payload["alerts"] = [{**alert, "fingerprint": f"fp{i}"} for i in range(300)]
    status = check(json.dumps(payload).encode())
    assert status == 200 or 400 <= status < 500


def test_unauthenticated_garbage_is_401_and_not_stored() -> None:
    before = AlertDelivery.objects.count()
    assert post(b"\x00\xff garbage", token="wrong").status_code == 401
    assert AlertDelivery.objects.count() == before
