"""The operator console in Debian's Chromium: find a failed run, read it, open its trace, act on runs; watch a
run finish without reloading; cancel with a confirmation; read a retried run's timeline; fit a phone.

Screenshots are saved to var/test-artifacts/console/ (ARTIFACTS_DIR overrides) for review; the README's
"Operator console" pictures under docs/console/ are copies of them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings as django_settings
from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect

from agents.models import AgentRun
from tests.browser import overflow
from tests.browser import sign_in as browser_sign_in
from tests.conftest import finish
from workflows.models import RunStatus, RunStep, RunTransition, StepStatus, Workflow, WorkflowRun
from workflows.services import trigger_workflow

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = (
    Path(os.environ.get("ARTIFACTS_DIR") or Path(django_settings.BASE_DIR) / "var" / "test-artifacts") / "console"
)
PHONE: ViewportSize = {"width": 390, "height": 844}
LAPTOP: ViewportSize = {"width": 1440, "height": 900}


@pytest.fixture(autouse=True)
def grafana(settings: Any) -> None:
    settings.GRAFANA_URL = "https://grafana.example.test"


def sign_in(
    browser: Browser, live_server: Any, username: str, password: str, viewport: ViewportSize | None = None
) -> Page:
    return browser_sign_in(browser, live_server, username, password, viewport=viewport or LAPTOP)


def screenshot(target: Page | Locator, name: str, **kwargs: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(ARTIFACTS / name), **kwargs)


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


def breadcrumbs_bar(page: Page) -> str:
    return str(page.locator("nav ol.breadcrumbs").evaluate("ol => getComputedStyle(ol).backgroundColor"))


def run_page(live_server: Any, run: WorkflowRun) -> str:
    return f"{live_server.url}/admin/workflows/workflowrun/{run.pk}/change/"


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
    page.locator("#changelist-filter").get_by_role("link", name="Failed").click()
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".run-status")).to_have_text("Failed")
    expect(rows.first).to_contain_text("1/2")
    expect(rows.first.locator(".run-error-excerpt")).to_contain_text("step 'doomed' failed after 3 attempts")
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
    expect(page.locator('.timeline-track[data-step="prepare"] .timeline-bar.attempt.status-success')).to_have_count(1)
    doomed = page.locator('.timeline-track[data-step="doomed"] .timeline-bar.attempt.status-failed')
    expect(doomed).to_have_count(3)
    expect(page.locator('.timeline-track[data-step="doomed"] .timeline-bar.backoff')).to_have_count(2)
    lefts = [left_percent(doomed.nth(i)) for i in range(3)]
    assert lefts == sorted(lefts) and lefts[0] < lefts[2]
    page.locator('tr[data-step="doomed"][data-attempt="1"] details.attempt-input summary').click()
    expect(page.locator('tr[data-step="doomed"][data-attempt="1"] details.attempt-input pre')).to_contain_text(
        "this step fails on purpose"
    )

    page.get_by_role("button", name="Retry failed steps").click()
    expect(page.locator(".messagelist")).to_contain_text(f"Retrying the failed steps of run {failed.pk}.")
    failed.refresh_from_db()
    assert failed.status == RunStatus.RUNNING
    expect(page.locator(".run-status-cell .run-status")).to_have_text("Running")


def test_a_run_page_moves_from_pending_to_success_with_no_reload(
    browser, live_server, synced, run_operator, real_worker
):
    run = run_of("scan-and-notify", target="web-3")
    steps = list(run.steps.values_list("key", flat=True))
    page = sign_in(browser, live_server, "olivia", "operator-pass-1")
    page.goto(run_page(live_server, run))
    status = page.locator("#run-status")
    expect(status).to_have_attribute("data-run-status", "PENDING")
    expect(page.locator(".dag-node")).to_have_count(len(steps))
    page.evaluate("window.loadedOnce = true")  # gone if the page is ever reloaded

    worker = real_worker()
    expect(status).to_have_attribute("data-run-status", "SUCCESS", timeout=30_000)
    worker.check_alive()
    assert page.evaluate("window.loadedOnce") is True
    expect(status.locator(".run-status")).to_have_text("Succeeded")
    expect(page.locator("[data-live]")).to_have_attribute("data-live-state", "done")
    # Every step in the picture, with its status in colour and in words; links to its attempts and its span.
    for key in steps:
        node = page.locator(f'.dag-node[data-step="{key}"]')
        expect(node).to_have_attribute("data-status", "SUCCESS")
        expect(node).to_contain_text("Succeeded")
        expect(node.locator(f'a[href="#attempts-{key}"]')).to_have_count(1)
    expect(page.locator(".timeline-track")).to_have_count(len(steps))
    expect(page.locator('.timeline-bar[data-kind="attempt"]')).to_have_count(len(steps))
    expect(page.locator(".run-attempts tbody tr")).to_have_count(len(steps))
    expect(page.locator("#live-announce")).to_have_text("Run status: Succeeded")
    screenshot(page, "run-page.png")

    page.set_viewport_size(PHONE)
    page.reload()
    expect(status).to_have_attribute("data-run-status", "SUCCESS")
    assert overflow(page) == 0
    assert breadcrumbs_bar(page) == "rgb(38, 75, 93)"  # Django 6's --breadcrumbs-bg: styled, not flush-left text
    screenshot(page, "run-page-phone.png")
    # The trigger form: the same breadcrumbs, step chips without list bullets.
    page.goto(f"{live_server.url}/admin/workflows/workflow/{run.workflow_id}/trigger/")
    assert breadcrumbs_bar(page) == "rgb(38, 75, 93)"
    chips = page.locator(".trigger-steps li")
    expect(chips).to_have_count(len(steps))
    assert chips.first.evaluate("li => getComputedStyle(li).listStyleType") == "none"
    assert overflow(page) == 0


def test_cancel_asks_first_on_the_run_page_and_for_selected_runs(browser, live_server, run_operator, make_run):
    done = make_run("scan-and-notify", status=RunStatus.SUCCESS, context={"target": "db-1"})
    failed = make_run(status=RunStatus.FAILED, step_statuses={"doomed": StepStatus.FAILED})
    failed.error = "step 'doomed' failed after 3 attempts: AgentError: this step fails on purpose"
    failed.save(update_fields=["error"])
    running = [run_of("chain-40") for _ in range(3)]  # nobody works on them: they stay in flight
    page = sign_in(browser, live_server, "olivia", "operator-pass-1")

    page.goto(run_page(live_server, done))
    page.get_by_role("button", name="Re-run with same context").click()
    rerun = WorkflowRun.objects.get(rerun_of=done)
    expect(page.locator(".messagelist")).to_contain_text(f"Started run {rerun.pk}, a re-run of {done.pk}.")

    page.goto(run_page(live_server, running[0]))
    # While the run is open the page refreshes itself: its queue time and timeline grow, the buttons stay put.
    page.evaluate("window.kept = [document.querySelector('.run-actions'), document.getElementById('run-timeline')]")
    page.wait_for_function("!document.contains(window.kept[1])", timeout=10_000)
    assert page.evaluate("document.contains(window.kept[0])") is True
    page.get_by_role("link", name="Cancel run…").click()
    expect(page.locator("h1")).to_have_text("Cancel 1 run?")
    expect(page.locator(".confirm-effects")).to_contain_text("40 open steps will be cancelled")
    assert breadcrumbs_bar(page) == "rgb(38, 75, 93)"
    page.get_by_role("link", name="No, keep it running").click()
    expect(page.locator("#run-status")).to_have_attribute("data-run-status", "PENDING")
    assert WorkflowRun.objects.get(pk=running[0].pk).status == RunStatus.PENDING
    page.get_by_role("link", name="Cancel run…").click()
    page.get_by_role("button", name="Yes, cancel 1 run").click()
    expect(page.locator(".messagelist")).to_contain_text(f"Cancelled run {running[0].pk}.")
    expect(page.locator(".run-status-cell .run-status")).to_have_text("Cancelled")
    expect(page.get_by_role("link", name="Cancel run…")).to_have_count(0)

    # The run list at 1440x900 with the navigation sidebar open: every column in view, nothing scrolls.
    page.goto(f"{live_server.url}/admin/workflows/workflowrun/")
    expect(page.locator("#nav-sidebar")).to_be_visible()
    results = page.locator("#changelist .results")
    assert results.evaluate("e => e.scrollWidth - e.clientWidth") == 0
    trace_header = page.locator("#result_list thead th.column-trace_link").bounding_box()
    assert trace_header is not None and trace_header["x"] + trace_header["width"] <= LAPTOP["width"]
    assert overflow(page) == 0
    expect(page.locator(f'tr:has(code[data-run="{failed.pk}"]) .run-progress-bar .failed')).to_have_count(1)
    screenshot(page, "run-list.png")

    for run in [*running[1:], failed]:
        page.locator(f'input.action-select[value="{run.pk}"]').check()
    page.locator("select[name=action]").select_option("cancel_runs")
    page.locator("button[name=index]").click()  # the action bar's "Run"
    expect(page.locator("h1")).to_have_text("Cancel 2 runs?")
    expect(page.locator(".confirm-list.finished")).to_contain_text(str(failed))
    assert [WorkflowRun.objects.get(pk=r.pk).status for r in running[1:]] == [RunStatus.PENDING] * 2
    page.get_by_role("button", name="Yes, cancel 2 runs").click()
    for run in running[1:]:
        expect(page.locator(".messagelist")).to_contain_text(f"Cancelled run {run.pk}.")
    assert [WorkflowRun.objects.get(pk=r.pk).status for r in running] == [RunStatus.CANCELLED] * 3
    assert WorkflowRun.objects.get(pk=failed.pk).status == RunStatus.FAILED


def test_the_timeline_of_a_manually_retried_run_shows_the_idle_gap_as_a_gap(browser, live_server, synced, run_operator):
    run = finish(run_of("test-failure", note="retried"))
    doomed = RunStep.objects.get(run=run, key="doomed")
    # The operator came back twenty minutes later and retried it: round 2 failed again.
    assert run.finished_at is not None
    retried = run.finished_at + timedelta(minutes=20)
    RunTransition.objects.create(
        run=run, from_status=RunStatus.FAILED, to_status=RunStatus.RUNNING, at=retried, actor="olivia"
    )
    for number, offset in ((4, 0.02), (5, 0.6), (6, 1.7)):
        start = retried + timedelta(seconds=offset)
        AgentRun.objects.create(
            run=run,
            step=doomed,
            attempt=number,
            agent_type="fail",
            status="FAILED",
            error_type="AgentError",
            error_message="this step fails on purpose",
            started_at=start,
            finished_at=start + timedelta(milliseconds=25),
        )
    end = retried + timedelta(seconds=1.73)
    RunTransition.objects.create(run=run, from_status=RunStatus.RUNNING, to_status=RunStatus.FAILED, at=end)
    WorkflowRun.objects.filter(pk=run.pk).update(finished_at=end)
    RunStep.objects.filter(pk=doomed.pk).update(attempts=6, attempt_offset=3)

    page = sign_in(browser, live_server, "olivia", "operator-pass-1")
    page.goto(run_page(live_server, run))
    track = page.locator('.timeline-track[data-step="doomed"]')
    idle = track.locator(".timeline-bar.idle")
    expect(idle).to_have_count(1)
    expect(track.locator(".timeline-break")).to_have_count(1)
    expect(page.locator(".timeline-axis .break-label")).to_have_text(re.compile(r"≈20m \ds"))
    track_box, idle_box = track.bounding_box(), idle.bounding_box()
    assert track_box is not None and idle_box is not None
    assert idle_box["width"] < 0.1 * track_box["width"]  # twenty minutes behind a break, not 98 % of the track
    attempts = track.locator(".timeline-bar.attempt")
    expect(attempts).to_have_count(6)
    xs = []
    for i in range(6):
        box = attempts.nth(i).bounding_box()
        assert box is not None and box["width"] >= 2
        xs.append(box["x"])
    assert xs == sorted(xs) and xs[-1] - xs[0] > 0.6 * track_box["width"]  # spread over the track, not crushed
    expect(page.locator(".run-attempts tr.round-head")).to_have_count(2)
    expect(page.locator(".run-attempts tr.round-head").nth(1)).to_contain_text("Round 2 · retried by olivia")
    expect(page.locator(".run-error-note")).to_contain_text("From round 2, after the retry by olivia")
    # Bars are reachable by keyboard and say what they are.
    idle.focus()
    expect(idle.locator(".tip")).to_be_visible()
    expect(idle).to_have_attribute("aria-label", re.compile(r"^doomed: idle until retried, 20m \ds, from \+"))
    screenshot(page.locator("#run-timeline"), "timeline-retried.png")


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
