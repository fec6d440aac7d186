"""Property-based fuzzing of the webhook from outside: a live gunicorn on PostgreSQL, and payloads as a hostile or
merely unusual sender would write them.

Grafana and Alertmanager payloads with arbitrary text in every string field (NUL, lone surrogates, very long),
arbitrary JSON in ``values``, labels and annotations, extreme and malformed dates, huge and tiny numbers
(NaN, Infinity, 1e999, integers of thousands of digits), many alerts, duplicated and missing fields; and raw
bytes with any Content-Type and Content-Encoding. The invariant, for every example:

- never a 5xx while the database is up;
- every delivery is stored byte for byte;
- every 200 has its runs (existing, linked to the delivery); every 4xx is stored as rejected with its reason;
- replaying the stored delivery obeys the same rule, and a rejected one is rejected again the same way.

ALERT_FUZZ_EXAMPLES sets the number of examples per test (CI: the defaults below, well under a minute each);
e.g. ``ALERT_FUZZ_EXAMPLES=5000`` for a long run by hand, with fresh random examples each time.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from alerts import processing
from alerts.models import AlertDelivery
from tests.alerts.live import GATED_WORKFLOW, LIVE_DB, LiveService
from workflows.models import WorkflowRun

EXAMPLES = os.environ.get("ALERT_FUZZ_EXAMPLES")
# CI's examples take well under a minute per test; a long run by hand gets a second per example.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(max(300, int(EXAMPLES or 0))),
    LIVE_DB,
    pytest.mark.usefixtures("synced_live"),
]


def fuzz(default: int) -> Any:
    return settings(
        max_examples=int(EXAMPLES or default),
        deadline=None,
        derandomize=EXAMPLES is None,  # CI: the same examples every run; by hand: new ones each time
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# --- What a sender can write ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: numbers Python would not print (NaN, 1e999, 5,000 digits)."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """A JSON object written with its keys as given, duplicates included (the last one wins when read)."""

    items: tuple[tuple[str, Any], ...]


def dumps(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)  # NaN and Infinity as Python writes them; lone surrogates as \\udXXX escapes


# Every code point, NUL and lone surrogates included.
chars = st.characters(exclude_categories=())
text = st.one_of(
    st.text(chars, max_size=30),
    st.sampled_from(["", "firing", "resolved", "\x00", "\ud800", "a\udfffb", "💥", "\u2028", "NaN", "null"]),
    st.builds(lambda c, n: c * n, st.text(chars, min_size=1, max_size=3), st.integers(150, 3000)),
)
numbers = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e999"), Raw("-1e999"), Raw("1e-999")]),
    st.from_regex(r"-?(0|[1-9][0-9]{0,6000})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?", fullmatch=True).map(Raw),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
deep = st.integers(1, 3000).map(lambda n: Raw("[" * n + "]" * n))


def at(offset_minutes: int, moment: datetime) -> str:
    return moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes))).isoformat()


# Times a sender may write: any offset, years 2 to 9999 (past the end in UTC: clamped), nanoseconds.
dates = st.one_of(
    st.builds(at, st.integers(-1439, 1439), st.datetimes(min_value=datetime(2, 1, 1))),
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 1, 2)).map(
        lambda d: d.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    ),
    st.sampled_from(["9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59.999999999Z", "2026-11-28T10:02:11.123456789Z"]),
)
bad_dates = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00+14:00",
            "2026-11-28T10:02:11",
            "2026-02-30T00:00:00Z",
            "10000-01-01T00:00:00Z",
            "",
        ]
    ),
    text,
    json_values,
)
label_maps = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(["alertname", "severity", "team", "workflow", "job"]), text), text),
    st.fixed_dictionaries(
        {"alertname": text, "workflow": st.sampled_from([GATED_WORKFLOW, "alert-notification", "x"])}
    ),
)
annotation_maps = st.dictionaries(
    st.one_of(st.sampled_from(["summary", "description", "runbook_url", "dashboard_url"]), text), text
)
# A few fingerprints recur across examples, so that repeats, resolutions and links are exercised.
fingerprints = st.one_of(st.sampled_from(["fp-a", "fp-b", "fp-c", "0f3a9b27c54e1d88"]), text)
urls = st.one_of(st.sampled_from(["http://h/x", "/relative", "//[::1", "http://[bad"]), text)
ALERT_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "labels": label_maps,
    "annotations": annotation_maps,
    "endsAt": st.one_of(dates, st.just("0001-01-01T00:00:00Z")),
    "fingerprint": fingerprints,
    "generatorURL": urls,
    "dashboardURL": urls,
    "panelURL": urls,
    "silenceURL": urls,
    "values": st.one_of(st.none(), st.dictionaries(text, st.one_of(json_values, deep), max_size=5)),
    "valueString": text,
    "extra": json_values,
}
alert: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved"]), "startsAt": dates}, optional=ALERT_OPTIONAL
)


def many(template: dict[str, Any], count: int) -> list[dict[str, Any]]:
    return [{**template, "fingerprint": f"many-{count}-{i}"} for i in range(count)]


TOP_REQUIRED: dict[str, st.SearchStrategy[Any]] = {
    "version": st.sampled_from(["1", "4"]),
    "status": st.sampled_from(["firing", "resolved"]),
    "alerts": st.one_of(st.lists(alert, min_size=1, max_size=6), st.builds(many, alert, st.integers(50, 400))),
}
TOP_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "receiver": text,
    "groupKey": text,
    "groupLabels": label_maps,
    "commonLabels": label_maps,
    "commonAnnotations": annotation_maps,
    "externalURL": urls,
    "truncatedAlerts": st.integers(min_value=0),
    "orgId": st.integers(min_value=0),
    "title": text,
    "state": text,
    "message": text,
    "extra": json_values,
}
payloads: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(TOP_REQUIRED, optional=TOP_OPTIONAL)
ALERT_KEYS = ["status", "startsAt", "endsAt", "labels", "annotations", "fingerprint", "values", "generatorURL"]
TOP_KEYS = ["version", "status", "alerts", "groupLabels", "commonLabels", "truncatedAlerts", "orgId", "groupKey"]


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A payload with one to three things wrong: a field of the wrong type or a bad date, a field missing, a
    key written twice (the last one wins when read)."""
    payload: dict[str, Any] = draw(payloads)
    for _ in range(draw(st.integers(1, 3))):
        alerts = payload.get("alerts")
        # An alert still an object (an earlier change may have replaced the list or an item, or paired it).
        objects = (
            [a for a in alerts if isinstance(a, dict) and "__pairs__" not in a] if isinstance(alerts, list) else []
        )
        in_alert = bool(objects) and draw(st.booleans())
        if not in_alert and "__pairs__" in payload:
            break
        target: dict[str, Any] = draw(st.sampled_from(objects)) if in_alert else payload
        key = draw(st.sampled_from(ALERT_KEYS if in_alert else TOP_KEYS))
        change = draw(st.sampled_from(["replace", "date", "drop", "twice"]))
        if change == "drop":
            target.pop(key, None)
        elif change == "date":
            target[key] = draw(bad_dates)
        elif change == "replace":
            target[key] = draw(st.one_of(json_values, text, st.just([])))
        else:
            pairs = list(target.items())
            pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(json_values)))
            target.clear()
            target["__pairs__"] = Pairs(tuple(pairs))
    return dumps(unpair(payload)).encode()


def unpair(value: Any) -> Any:
    """Objects that got a key twice are written from their pairs."""
    if isinstance(value, dict):
        if set(value) == {"__pairs__"}:
            return Pairs(tuple((k, unpair(v)) for k, v in value["__pairs__"].items))
        return {k: unpair(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unpair(v) for v in value]
    return value


# --- The invariant ----------------------------------------------------------------------------------------


# The server's WEBHOOK_MAX_BODY_BYTES (its default): larger bodies get 413 unread (tests/security covers it).
LIMIT = 1_048_576


def check(service: LiveService, body: bytes, headers: dict[str, str] | None = None) -> int:
    assume(len(body) <= LIMIT)
    status, answer = service.post(body, headers)
    assert status < 500, (status, answer, body[:500])
    assert isinstance(answer, dict), answer
    delivery = AlertDelivery.objects.get(pk=answer["deliveryId"])
    assert delivery.raw_body is not None and bytes(delivery.raw_body) == body
    check_outcome(delivery, status, answer)
    replayed = processing.replay(delivery)
    assert replayed.status < 500, (replayed.status, replayed.body, body[:500])
    delivery.refresh_from_db()
    check_outcome(delivery, replayed.status, replayed.body)
    if status != 200:
        assert (replayed.status, replayed.body["detail"]) == (status, answer["detail"])
    service.check_alive()
    return status


def check_outcome(delivery: AlertDelivery, status: int, answer: dict[str, Any]) -> None:
    if status == 200:
        run_ids = answer["workflowRunIds"]
        assert len(run_ids) <= 1
        runs = WorkflowRun.objects.filter(id__in=run_ids)
        assert [str(run.id) for run in runs] == run_ids and all(run.trigger == "alert" for run in runs)
        assert set(run_ids) <= {str(run.id) for run in delivery.runs.all()}
        expected = AlertDelivery.Outcome.PROCESSED if run_ids else AlertDelivery.Outcome.DEDUPLICATED
        assert delivery.outcome == expected and delivery.http_status == 200
    else:
        assert 400 <= status < 500, (status, answer)
        assert delivery.outcome == AlertDelivery.Outcome.REJECTED and delivery.http_status == status
        assert delivery.error and delivery.error == answer["detail"]


@pytest.fixture(autouse=True)
def same_settings_as_the_server(settings: Any) -> None:
    """The in-process replay decides as the live server does."""
    settings.ALERT_WORKFLOW_ALLOWLIST = [GATED_WORKFLOW]


outcomes: dict[str, dict[int, int]] = {}


def count(test: str, status: int) -> None:
    counts = outcomes.setdefault(test, {})
    counts[status] = counts.get(status, 0) + 1


@fuzz(150)
@given(payload=payloads)
def test_payloads_of_the_right_shape_with_any_content_get_their_runs(
    live_service: LiveService, payload: dict[str, Any]
) -> None:
    count("shaped", check(live_service, dumps(payload).encode()))


@fuzz(120)
@given(body=mangled())
def test_payloads_with_wrong_missing_or_repeated_fields_never_get_a_5xx(live_service: LiveService, body: bytes) -> None:
    count("mangled", check(live_service, body))


encodings = st.one_of(st.sampled_from(["", "gzip", "GZIP", "x-gzip", "identity", "br", "deflate", "gzip, br"]), text)
content_types = st.one_of(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "", "application/x+json"]),
    text,
)


@st.composite
def transported(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    body = draw(st.one_of(payloads.map(lambda p: dumps(p).encode()), st.binary(max_size=2000)))
    encoding = draw(encodings)
    if "gzip" in encoding.lower() and draw(st.booleans()):
        body = gzip.compress(body)
        if draw(st.integers(0, 3)) == 0:
            body = body[: draw(st.integers(0, len(body)))]  # cut short
    headers = {"Content-Type": draw(content_types)}
    if encoding:
        headers["Content-Encoding"] = encoding
    # http.client sends only header values without control characters, and gunicorn refuses a header over
    # 8,190 bytes itself (400, before the service sees it): values of printable ASCII, up to 4,000 characters.
    printable = {k: "".join(c for c in v if " " <= c <= "~")[:4000] for k, v in headers.items()}
    return body, printable


@fuzz(80)
@given(request=transported())
def test_any_bytes_content_type_and_encoding_never_get_a_5xx(
    live_service: LiveService, request: tuple[bytes, dict[str, str]]
) -> None:
    body, headers = request
    count("transport", check(live_service, body, headers))


def test_the_fuzzing_reached_processing_and_refusals(live_service: LiveService) -> None:
    """The examples of the right shape mostly start runs, the mangled ones are mostly refused: the fuzzing
    reached both the processing and the refusals."""
    print("outcomes by status:", outcomes)
    shaped, broken = outcomes["shaped"], outcomes["mangled"]
    assert shaped.get(200, 0) >= sum(shaped.values()) * 0.9, shaped
    assert sum(n for status, n in broken.items() if status >= 400) >= sum(broken.values()) * 0.5, broken
