"""Grafana deep links: each URL decoded, its Explore pane checked field by field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from observability import links

START = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
END = START + timedelta(seconds=42)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def grafana(settings: Any) -> None:
    settings.GRAFANA_URL = "https://grafana.example.test/"
    settings.GRAFANA_ORG_ID = 3
    settings.GRAFANA_TEMPO_UID = "tempo"
    settings.GRAFANA_LOKI_UID = "loki"
    settings.GRAFANA_WORKFLOW_DASHBOARD_UID = "workflow-overview"


def explore_pane(url: str | None) -> dict[str, Any]:
    assert url is not None
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "grafana.example.test", "/explore")
    query = parse_qs(parts.query, strict_parsing=True)
    assert query["schemaVersion"] == ["1"]
    assert query["orgId"] == ["3"]
    panes = json.loads(query["panes"][0])
    assert list(panes) == [links.PANE_ID]
    return panes[links.PANE_ID]


def ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def test_the_trace_link_opens_tempo_by_trace_id_around_the_run():
    pane = explore_pane(links.trace_url(TRACE, START, END))
    assert pane["datasource"] == "tempo"
    assert pane["queries"] == [
        {"refId": "A", "datasource": {"type": "tempo", "uid": "tempo"}, "queryType": "traceql", "query": TRACE}
    ]
    assert pane["range"] == {"from": ms(START - timedelta(minutes=5)), "to": ms(END + timedelta(minutes=10))}
    assert "panelsState" not in pane


def test_the_span_link_selects_the_attempts_span_in_the_trace():
    pane = explore_pane(links.trace_url(TRACE, START, END, span_id=SPAN))
    assert pane["queries"][0]["query"] == TRACE
    assert pane["panelsState"] == {"trace": {"spanId": SPAN}}


def test_a_run_in_flight_gets_a_range_up_to_now(settings):
    pane = explore_pane(links.trace_url(TRACE, START, None))
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert int(pane["range"]["from"]) == int(ms(START)) - 300_000
    assert abs(int(pane["range"]["to"]) - (now_ms + 600_000)) < 5_000


def test_the_logs_link_queries_loki_by_trace_id(monkeypatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    pane = explore_pane(links.logs_url(TRACE, START, END))
    assert pane["datasource"] == "loki"
    (query,) = pane["queries"]
    assert query["datasource"] == {"type": "loki", "uid": "loki"}
    assert query["expr"] == '{service_name="orchestration-service"} | trace_id="' + TRACE + '"'
    assert pane["range"]["from"] == ms(START - timedelta(minutes=5))


def test_datasource_uids_come_from_settings(settings):
    settings.GRAFANA_TEMPO_UID = "my-tempo"
    settings.GRAFANA_LOKI_UID = "my-loki"
    assert explore_pane(links.trace_url(TRACE, START, END))["queries"][0]["datasource"]["uid"] == "my-tempo"
    assert explore_pane(links.logs_url(TRACE, START, END))["queries"][0]["datasource"]["uid"] == "my-loki"


def test_the_dashboard_link_filters_to_the_workflow_and_the_runs_time():
    url = links.workflow_dashboard_url("scan-and-notify", START, END)
    assert url is not None
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("grafana.example.test", "/d/workflow-overview")
    assert parse_qs(parts.query) == {
        "orgId": ["3"],
        "var-workflow": ["scan-and-notify"],
        "from": [ms(START - timedelta(minutes=5))],
        "to": [ms(END + timedelta(minutes=10))],
    }


def test_the_home_page_dashboards_are_the_provisioned_ones():
    found = {urlsplit(d["url"]).path for d in links.dashboards()}
    assert found == {"/d/workflow-overview", "/d/agent-performance", "/d/cost-tracking", "/d/system-health"}


def test_run_links_name_trace_logs_and_dashboard():
    run = SimpleNamespace(
        trace_id=TRACE, created_at=START, started_at=START, finished_at=END, workflow=SimpleNamespace(slug="wf")
    )
    found = links.run_links(run)  # type: ignore[arg-type]
    assert set(found) == {"trace", "logs", "dashboard"}
    assert explore_pane(found["trace"])["queries"][0]["query"] == TRACE
    assert parse_qs(urlsplit(found["dashboard"]).query)["var-workflow"] == ["wf"]
    attempt = SimpleNamespace(span_id=SPAN)
    assert explore_pane(links.attempt_span_url(run, attempt))["panelsState"]["trace"]["spanId"] == SPAN  # type: ignore[arg-type]
    assert links.attempt_span_url(run, SimpleNamespace(span_id="")) is None  # type: ignore[arg-type]


def test_without_grafana_url_there_are_no_links(settings):
    settings.GRAFANA_URL = ""
    run = SimpleNamespace(
        trace_id=TRACE, created_at=START, started_at=START, finished_at=END, workflow=SimpleNamespace(slug="wf")
    )
    assert links.trace_url(TRACE, START, END) is None
    assert links.logs_url(TRACE, START, END) is None
    assert links.workflow_dashboard_url("wf") is None
    assert links.dashboards() == []
    assert links.run_links(run) == {}  # type: ignore[arg-type]


def test_a_run_without_a_trace_id_gets_no_trace_or_logs_link():
    run = SimpleNamespace(
        trace_id="", created_at=START, started_at=None, finished_at=None, workflow=SimpleNamespace(slug="wf")
    )
    assert set(links.run_links(run)) == {"dashboard"}  # type: ignore[arg-type]
