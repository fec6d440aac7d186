"""The operator console in Debian's Chromium: find a failed run, read it, open its trace, act on runs.

The run page's screenshot is saved to var/test-artifacts/console/ (ARTIFACTS_DIR overrides) for review.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings as django_settings
from playwright.sync_api import Browser, Locator, Page, expect

from agents.models import AgentRun
from tests.browser import sign_in as browser_sign_in
from tests.conftest import finish
from workflows.models import RunStatus, Workflow, WorkflowRun
from workflows.services import trigger_workflow

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = (
    Path(os.environ.get("ARTIFACTS_DIR") or Path(django_settings.BASE_DIR) / "var" / "test-artifacts") / "console"
)


@pytest.fixture(autouse=True)
def grafana(settings: Any) -> None:
    settings.GRAFANA_URL = "https://grafana.example.test"


def sign_in(browser: Browser, live_server: Any, username: str, password: str) -> Page:
    return browser_sign_in(browser, live_server, username, password, viewport={"width": 1440, "height": 1000})


def run_of(slug: str, **context: Any) -> WorkflowRun:
    # Telemetry is off in tests, so the run is given the trace id a traceparent header would have carried.
    run, _ = trigger_workflow(Workflow.objects.get(slug=slug), context=context, trace_id=secrets.token_hex(16))
    return run


def with_span_ids(run: WorkflowRun) -> list[str]:
    """Gives each attempt the span id telemetry records when it is on; returns them in page order."""
    ids = []
    for attempt in AgentRun.objects.filter(run=run).order_by("started_at", "id"):
        attempt.span_id = secrets.token_hex(8)
        attempt.save(update_fields=["span_id"])
        ids.append(attempt.span_id)
    return ids


def attribute(locator: Locator, name: str) -> str:
    value = locator.get_attribute(name)
    assert value is not None, f"no {name} attribute"
    return value


def left_percent(bar: Locator) -> float:
    """Where a timeline bar starts, from its inline style."""
    found = re.search(r"left:([\d.]+)%", attribute(bar, "style"))
    assert found is not None
    return float(found.group(1))


def test_an_operator_finds_a_failed_run_reads_it_and_retries_it(browser, live_server, synced, run_operator):
    failed = finish(run_of("test-failure", note="browser"))
    assert failed.status == RunStatus.FAILED
    span_ids = with_span_ids(failed)
    succeeded = finish(run_of("scan-and-notify", target="web-3"))
    assert succeeded.status == RunStatus.SUCCESS
    page = sign_in(browser, live_server, "olivia", "operator-pass-1")

    expect(page.locator(".runs-by-status li[data-status=FAILED] .count")).to_have_text("1")
    page.get_by_role("link", name="Workflow runs").first.click()
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    page.locator("#changelist-filter").get_by_role("link", name="FAILED").click()
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".run-status")).to_have_text("FAILED")
    expect(rows.first).to_contain_text("1/2")
    rows.first.locator("th a").click()

    expect(page.locator("h1")).to_contain_text(f"Run {str(failed.pk)[:8]}")
    # The trace link opens the run's trace in Explore.
    href = attribute(page.locator("a.trace-link"), "href")
    panes = json.loads(parse_qs(urlsplit(href).query)["panes"][0])
    (pane,) = panes.values()
    assert pane["queries"][0]["query"] == failed.trace_id
    assert pane["queries"][0]["datasource"]["uid"] == "tempo"
    # Each attempt's span link selects that attempt's span in the same trace.
    span_links = page.locator("a.span-link")
    expect(span_links).to_have_count(len(span_ids))
    for i, span_id in enumerate(span_ids):
        (span_pane,) = json.loads(parse_qs(urlsplit(attribute(span_links.nth(i), "href")).query)["panes"][0]).values()
        assert (span_pane["queries"][0]["query"], span_pane["panelsState"]["trace"]["spanId"]) == (
            failed.trace_id,
            span_id,
        )
    # The timeline: one row per step; doomed has its three failed attempts, separated by backoff.
    expect(page.locator(".timeline-track")).to_have_count(2)
    expect(page.locator('.timeline-track[data-step="prepare"] .timeline-bar.attempt.success')).to_have_count(1)
    doomed = page.locator('.timeline-track[data-step="doomed"] .timeline-bar.attempt.failed')
    expect(doomed).to_have_count(3)
    lefts = [left_percent(doomed.nth(i)) for i in range(3)]
    assert lefts == sorted(lefts) and lefts[0] < lefts[2]
    page.locator('tr[data-step="doomed"][data-attempt="1"] details.attempt-input summary').click()
    expect(page.locator('tr[data-step="doomed"][data-attempt="1"] details.attempt-input pre')).to_contain_text(
        "this step fails on purpose"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "run-page.png"), full_page=True)

    page.get_by_role("button", name="Retry failed steps").click()
    expect(page.locator(".messagelist")).to_contain_text(f"Retrying the failed steps of run {failed.pk}.")
    failed.refresh_from_db()
    assert failed.status == RunStatus.RUNNING
    expect(page.locator(".run-status-cell .run-status")).to_have_text("RUNNING")


def test_an_operator_reruns_one_run_and_cancels_another(browser, live_server, synced, run_operator):
    done = finish(run_of("scan-and-notify", target="db-1"))
    running = run_of("chain-40")  # nobody works on it: it stays in flight
    page = sign_in(browser, live_server, "olivia", "operator-pass-1")

    page.goto(f"{live_server.url}/admin/workflows/workflowrun/{done.pk}/change/")
    page.get_by_role("button", name="Re-run with same context").click()
    rerun = WorkflowRun.objects.get(rerun_of=done)
    expect(page.locator(".messagelist")).to_contain_text(f"Started run {rerun.pk}, a re-run of {done.pk}.")
    expect(page.locator("h1")).to_contain_text(f"Run {str(rerun.pk)[:8]}")
    assert rerun.context == {"target": "db-1"}

    page.goto(f"{live_server.url}/admin/workflows/workflowrun/{running.pk}/change/")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator(".messagelist")).to_contain_text(f"Cancelled run {running.pk}.")
    expect(page.locator(".run-status-cell .run-status")).to_have_text("CANCELLED")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    running.refresh_from_db()
    assert running.status == RunStatus.CANCELLED


def test_a_viewer_reads_runs_but_gets_no_action_buttons(browser, live_server, synced, viewer):
    failed = finish(run_of("test-failure"))
    page = sign_in(browser, live_server, "victor", "viewer-pass-1")
    page.goto(f"{live_server.url}/admin/workflows/workflowrun/")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("select[name=action]")).to_have_count(0)
    page.locator("#result_list tbody tr th a").click()
    expect(page.locator(".timeline-track")).to_have_count(2)
    expect(page.locator(".run-actions")).to_have_count(0)
    expect(page.locator("input[type=submit]")).to_have_count(0)
    assert WorkflowRun.objects.get(pk=failed.pk).status == RunStatus.FAILED
