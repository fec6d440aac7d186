"""Whatever a payload contains, the answer is 200 with its runs or a 4xx naming the problem: never a 5xx.

Content that can be kept is kept: over-long names cut with a visible marker ("…"), values PostgreSQL cannot
store replaced by documented placeholders, dates past the representable range clamped. Every column written
from alert content is checked at its bound and beyond.
"""

from __future__ import annotations

import copy
import gzip
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from alerts.models import AlertDelivery, AlertEvent
from alerts.processing import replay
from config.jsonsafe import TOO_DEEP, TRUNCATED
from tests.alerts.conftest import fixture, post
from workflows.models import RunTransition, WorkflowRun

pytestmark = pytest.mark.django_db


def one_run(response: Any) -> WorkflowRun:
    assert response.status_code == 200, response.content
    (run_id,) = response.json()["workflowRunIds"]
    return WorkflowRun.objects.get(id=run_id)


def stored(response: Any) -> AlertDelivery:
    return AlertDelivery.objects.get(pk=response.json()["deliveryId"])


def raw(delivery: AlertDelivery) -> bytes:
    """The bytes stored as received."""
    assert delivery.raw_body is not None
    return bytes(delivery.raw_body)


def alertmanager(*names: str, team: str = "platform") -> dict[str, Any]:
    """An Alertmanager group of one alert per name, grouped by ``team`` as a real route would group them."""
    payload = fixture("alertmanager_firing")
    template = payload["alerts"][0]
    payload["alerts"] = [
        {**copy.deepcopy(template), "labels": {"alertname": name, "team": team}, "fingerprint": f"fp{i:04d}"}
        for i, name in enumerate(names)
    ]
    payload["groupLabels"] = {"team": team}
    payload["commonLabels"] = {"team": team}
    payload["groupKey"] = f'{{}}:{{team="{team}"}}'
    return payload


def test_a_group_whose_names_exceed_the_transition_actor_starts_its_run(synced: None) -> None:
    names = [f"CommandCenterOrchestrationServiceHighLatencyOnTheCriticalPathN{i:04d}" for i in range(3)]
    assert all(len(n) == 66 for n in names)
    run = one_run(post(alertmanager(*names)))
    assert run.context["alert_name"] == ", ".join(names)  # the context keeps every name
    assert run.trigger_detail == f"alertmanager firing: {', '.join(names)}"  # 223 characters: fits 300
    actor = RunTransition.objects.get(run=run).actor
    assert len(actor) == 200 and actor.endswith(TRUNCATED)
    assert actor[:-1] == run.trigger_detail[:199]


@pytest.mark.parametrize(("length", "cut"), [(300, False), (301, True), (5000, True)])
def test_one_alert_name_at_and_past_its_columns(synced: None, length: int, cut: bool) -> None:
    name = "N" * length
    run = one_run(post(alertmanager(name)))
    event = AlertEvent.objects.get(runs=run)
    assert len(event.alertname) == min(length, 300)
    assert event.alertname.endswith(TRUNCATED) is cut
    assert len(run.trigger_detail) == 300 and run.trigger_detail.endswith(TRUNCATED)  # "alertmanager firing: N…"
    assert len(RunTransition.objects.get(run=run).actor) == 200
    assert run.context["alerts"][0]["labels"]["alertname"] == name


@pytest.mark.parametrize(("length", "kept"), [(279, True), (280, False)])
def test_the_trigger_detail_at_its_bound(synced: None, length: int, kept: bool) -> None:
    run = one_run(post(alertmanager("D" * length)))  # "alertmanager firing: " is 21 characters
    assert len(run.trigger_detail) == min(300, 21 + length)
    assert run.trigger_detail.endswith(TRUNCATED) is not kept


@pytest.mark.parametrize(("length", "kept"), [(199, True), (200, True), (201, False), (100_000, False)])
def test_fingerprints_at_and_past_the_column(synced: None, length: int, kept: bool) -> None:
    payload = alertmanager("LongFingerprint")
    payload["alerts"].append(copy.deepcopy(payload["alerts"][0]))
    payload["alerts"][0]["fingerprint"] = "f" * length
    payload["alerts"][1]["fingerprint"] = "f" * (length - 1) + "g"  # the same start: still another alert
    one_run(post(payload))
    fingerprints = sorted(AlertEvent.objects.values_list("fingerprint", flat=True))
    assert len(fingerprints) == 2 and all(len(f) <= 200 for f in fingerprints)
    if kept:
        assert fingerprints == sorted(["f" * length, "f" * (length - 1) + "g"])
    else:
        assert all(TRUNCATED + "#" in f for f in fingerprints)
    # The same alert again is the same alert: deduplicated.
    assert post(payload).json()["workflowRunIds"] == []


@pytest.mark.parametrize(("length", "kept"), [(1000, True), (1001, False)])
def test_the_group_key_at_its_bound(synced: None, length: int, kept: bool) -> None:
    payload = alertmanager("GroupKey")
    payload["groupKey"] = "k" * length
    delivery = stored(post(payload))
    assert delivery.group_key == ("k" * length if kept else "k" * 999 + TRUNCATED)


@pytest.mark.parametrize(("length", "kept"), [(1000, True), (1001, False)])
def test_kept_headers_at_their_bound(synced: None, length: int, kept: bool) -> None:
    delivery = stored(post(alertmanager("Header"), headers={"User-Agent": "u" * length}))
    assert delivery.headers["User-Agent"] == ("u" * length if kept else "u" * 999 + TRUNCATED)


@pytest.mark.parametrize(("length", "kept"), [(200, True), (201, False)])
def test_the_content_type_at_its_bound(synced: None, length: int, kept: bool) -> None:
    content_type = "text/" + "t" * (length - 5)
    response = post(alertmanager("ContentType"), content_type=content_type)
    assert response.status_code == 415
    delivery = stored(response)
    assert delivery.content_type == (content_type if kept else content_type[:199] + TRUNCATED)
    assert delivery.outcome == AlertDelivery.Outcome.REJECTED and "Content-Type" in delivery.error


def test_values_postgresql_cannot_store_get_placeholders(synced: None) -> None:
    payload = fixture("grafana_firing")
    values = '{"nan": NaN, "inf": Infinity, "neg": -Infinity, "big": 1e999, "k\\u0000ey": "v\\u0000", "s": "\\ud800"}'
    deep = "[" * 100 + "]" * 100
    huge = "9" * 5000
    payload["alerts"][0]["values"] = "VALUES"
    payload["alerts"][1]["values"] = {"deep": "DEEP", "huge": "HUGE", "neg": "NEGHUGE"}
    body = (
        json.dumps(payload)
        .replace('"VALUES"', values)
        .replace('"DEEP"', deep)
        .replace('"HUGE"', huge)
        .replace('"NEGHUGE"', "-" + huge)
    )
    response = post(raw=body.encode())
    run = one_run(response)
    first, second = (a["values"] for a in run.context["alerts"])
    assert first == {"nan": "NaN", "inf": "+Inf", "neg": "-Inf", "big": "+Inf", "k\ufffdey": "v\ufffd", "s": "\ufffd"}
    assert second["huge"] == "+Inf" and second["neg"] == "-Inf"
    nested, levels = second["deep"], 0
    while isinstance(nested, list):
        (nested,) = nested
        levels += 1
    assert nested == TOO_DEEP and 20 < levels < 32
    assert raw(stored(response)) == body.encode()  # the bytes as sent, placeholders or not


def test_labels_and_annotations_with_nul_and_lone_surrogates_are_kept_replaced(synced: None) -> None:
    payload = fixture("alertmanager_firing")
    payload["alerts"][0]["labels"]["inst\x00ance"] = "db\x0001"
    payload["alerts"][0]["annotations"]["summary"] = "SURROGATE"
    body = json.dumps(payload).replace('"SURROGATE"', '"half \\udc00 a pair"').encode()
    run = one_run(post(raw=body))
    alert = run.context["alerts"][0]
    assert alert["labels"]["inst\ufffdance"] == "db\ufffd01"
    assert alert["annotations"]["summary"] == "half \ufffd a pair"


@pytest.mark.parametrize(
    ("starts_at", "stored_as"),
    [
        ("9999-12-31T23:59:59-23:59", datetime.max.replace(tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999Z", datetime.max.replace(tzinfo=UTC)),
        ("0002-01-01T00:00:00+23:59", datetime(1, 12, 31, 0, 1, tzinfo=UTC)),
        ("2026-11-28T10:02:11.123456789Z", datetime(2026, 11, 28, 10, 2, 11, 123456, tzinfo=UTC)),
        ("2026-11-28T12:02:11+02:00", datetime(2026, 11, 28, 10, 2, 11, tzinfo=UTC)),
    ],
)
def test_extreme_dates_are_clamped_or_kept(synced: None, starts_at: str, stored_as: datetime) -> None:
    payload = alertmanager("Dates")
    payload["alerts"][0]["startsAt"] = starts_at
    payload["alerts"][0]["endsAt"] = starts_at
    run = one_run(post(payload))
    assert AlertEvent.objects.get(runs=run).starts_at == stored_as


@pytest.mark.parametrize(
    ("starts_at", "detail"),
    [
        ("0001-01-01T00:00:00Z", "alerts[0].startsAt must be a real time, not Go's zero time (year 1)"),
        ("10000-01-01T00:00:00Z", "alerts[0].startsAt must be an RFC 3339 time, not '10000-01-01T00:00:00Z'"),
        ("2026-11-28T10:02:11", "alerts[0].startsAt must carry a time zone offset"),
        ("x" * 500, "alerts[0].startsAt must be an RFC 3339 time, not 'xxxxxxxx"),
    ],
)
def test_dates_that_are_no_time_are_422_naming_the_field(synced: None, starts_at: str, detail: str) -> None:
    payload = alertmanager("BadDates")
    payload["alerts"][0]["startsAt"] = starts_at
    response = post(payload)
    assert response.status_code == 422
    assert response.json()["field"] == "alerts[0].startsAt" and response.json()["detail"].startswith(detail)
    assert len(response.json()["detail"]) < 200  # the value is shown cut, not echoed whole
    assert stored(response).error == response.json()["detail"]


def test_a_gzip_body_is_decoded_and_kept_byte_for_byte(synced: None) -> None:
    text = json.dumps(fixture("alertmanager_firing")).encode()
    compressed = gzip.compress(text)
    response = post(raw=compressed, headers={"Content-Encoding": "gzip"})
    one_run(response)
    delivery = stored(response)
    assert raw(delivery) == compressed and delivery.body == text.decode()
    assert delivery.headers["Content-Encoding"] == "gzip"
    assert replay(delivery).status == 200  # replayed from the same bytes: deduplicated, not refused


@pytest.mark.parametrize(
    ("encoding", "body", "status", "detail"),
    [
        ("br", b"\x1b\x00", 415, "Content-Encoding 'br' is not supported: send gzip or no encoding"),
        ("deflate", b"x\x9c", 415, "Content-Encoding 'deflate' is not supported"),
        ("gzip", b"not gzip at all", 400, "malformed gzip body (Content-Encoding: gzip)"),
        ("gzip", gzip.compress(b'{"version": "4"}')[:-12], 400, "malformed gzip body (Content-Encoding: gzip)"),
        ("gzip", gzip.compress(b" " * 3_000_000), 413, "the gzip body decompresses to more than the limit"),
    ],
)
def test_bodies_that_cannot_be_decoded_are_refused_and_kept(
    synced: None, encoding: str, body: bytes, status: int, detail: str
) -> None:
    response = post(raw=body, headers={"Content-Encoding": encoding})
    assert response.status_code == status
    assert response.json()["detail"].startswith(detail)
    delivery = stored(response)
    assert raw(delivery) == body
    assert delivery.outcome == AlertDelivery.Outcome.REJECTED and delivery.error.startswith(detail)
    result = replay(delivery)
    assert (result.status, result.body["detail"]) == (status, response.json()["detail"])


def test_bytes_that_are_not_utf8_are_kept_exactly(synced: None) -> None:
    body = b'{"version": "4", "status": "\xff\xfe\x00"}'
    response = post(raw=body)
    assert response.status_code == 400
    delivery = stored(response)
    assert raw(delivery) == body and delivery.body == '{"version": "4", "status": "\ufffd\ufffd\ufffd"}'


def test_the_same_alert_twice_in_one_group_is_one_alert(synced: None) -> None:
    payload = alertmanager("Twice")
    payload["alerts"].append(copy.deepcopy(payload["alerts"][0]))
    response = post(payload)
    one_run(response)
    assert response.json()["deduplicated"] == 1
    assert AlertEvent.objects.get().duplicates == 1


def test_missing_optional_fields_are_fine(synced: None) -> None:
    payload = {"version": "4", "status": "firing", "alerts": [{"status": "firing", "startsAt": "2026-11-28T10:00:00Z"}]}
    run = one_run(post(payload))
    assert run.context["alert_name"] == "alert" and run.context["severity"] == "critical"


def test_a_group_of_thousands_of_alerts_is_claimed_resolved_and_linked_in_one_delivery(synced: None) -> None:
    def many(status: str) -> dict[str, Any]:
        alerts = [
            {"status": status, "startsAt": "2026-11-28T10:00:00Z", "fingerprint": f"many{i}", "labels": {"i": f"{i}"}}
            for i in range(3000)
        ]
        return {"version": "4", "status": status, "alerts": alerts}

    firing = one_run(post(many("firing")))
    assert AlertEvent.objects.filter(runs=firing).count() == 3000
    repeat = post(many("firing")).json()
    assert repeat["workflowRunIds"] == [] and repeat["deduplicated"] == 3000
    resolved = one_run(post(many("resolved")))
    assert resolved.context["resolves_run_ids"] == [str(firing.id)]
    assert AlertEvent.objects.filter(status="resolved", firing_event__runs=firing).count() == 3000
