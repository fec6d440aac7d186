"""Approvals in the admin through Chromium: an operator approves and watches the run finish; the queue picks up
new requests by itself, on a phone, without touching what the operator is typing; a viewer gets no buttons."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from playwright.sync_api import expect

from approvals.models import ApprovalRequest
from tests.approvals.conftest import at_gate, start
from tests.browser import (
    overflow,
    real_worker,  # noqa: F401 - the worker process fixture
    sign_in,
)
from tests.conftest import work
from workflows.models import RunStatus

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = (
    Path(os.environ.get("ARTIFACTS_DIR") or Path(django_settings.BASE_DIR) / "var" / "test-artifacts") / "console"
)


def test_an_operator_approves_a_run_in_the_admin_and_sees_it_finish(browser, live_server, synced, operator):
    run = start("scan-approve-notify", context={"target": "web-3"})
    req = at_gate(run)
    page = sign_in(browser, live_server, "olivia", "operator-pass-1")

    page.get_by_role("link", name="Pending approvals").first.click()
    card = page.locator(f"#approval-{req.pk}")
    expect(card).to_contain_text("Scan, approve and notify — Send the scan report")
    expect(card.locator(".approval-inputs")).to_contain_text("Scan of web-3 found")
    card.get_by_label("Comment (required to reject)").fill("checked the findings")
    card.get_by_role("button", name=f"Approve step 'Send the scan report' of run {str(run.pk)[:8]}").click()

    expect(page.locator(".messagelist")).to_contain_text(f"Approved step 'notify' of run {run.pk}")
    expect(page.locator(f"#approval-{req.pk}")).to_have_count(0)
    expect(page.locator(".empty-queue")).to_be_visible()

    # The run page shows the run's own status, not a step's: the gate is released but nothing has run yet.
    page.goto(f"{live_server.url}/admin/workflows/workflowrun/{run.pk}/change/")
    status = page.locator("#run-status")
    expect(status).to_have_attribute("data-run-status", "RUNNING")
    expect(page.locator(".transition-actor").last).to_have_text("olivia")
    work()  # the rest of the run, in this process
    expect(status).to_have_attribute("data-run-status", "SUCCESS")  # no reload: the page refreshes itself
    expect(status.locator(".run-status")).to_have_text("Succeeded")
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS
    req.refresh_from_db()
    assert (req.status, req.decided_by, req.decision_comment, req.channel) == (
        ApprovalRequest.Status.APPROVED,
        operator,
        "checked the findings",
        "admin",
    )
    assert req.wait_seconds is not None and req.wait_seconds > 0


def test_the_queue_picks_up_a_new_request_on_a_phone_without_disturbing_the_typing(
    browser,
    live_server,
    synced,
    operator,
    real_worker,  # noqa: F811 - the fixture imported above
):
    first = at_gate(start("scan-approve-notify", context={"target": "db-1"}))
    page = sign_in(browser, live_server, "olivia", "operator-pass-1", viewport={"width": 390, "height": 844})
    page.goto(f"{live_server.url}/admin/approvals/pendingapproval/")
    expect(page.locator(".approval-card")).to_have_count(1)
    comment = page.locator(f"#comment-{first.pk}")
    comment.fill("looking at db-1 now")
    page.evaluate("window.loadedOnce = true")

    real_worker()
    second_run = start("scan-approve-notify", context={"target": "db-2"})
    second = page.locator(".approval-card").nth(1)
    expect(page.locator(".approval-card")).to_have_count(2, timeout=30_000)
    expect(second).to_contain_text("Scan of db-2 found")
    expect(page.locator("#queue-summary")).to_contain_text("2 requests waiting")
    assert page.evaluate("window.loadedOnce") is True
    expect(comment).to_have_value("looking at db-1 now")
    expect(comment).to_be_focused()
    expect(page.locator(f"#approval-{first.pk} .waiting")).to_have_text(re.compile(r"^\d+ s \(since"))
    assert overflow(page) == 0
    crumbs = page.locator("nav ol.breadcrumbs")
    assert crumbs.evaluate("ol => getComputedStyle(ol).backgroundColor") == "rgb(38, 75, 93)"  # Django 6's bar
    bulk = page.get_by_role("button", name="Approve selected…")
    box = bulk.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    approve = page.locator(f"#approval-{first.pk} .approve-button").bounding_box()
    reject = page.locator(f"#approval-{first.pk} .reject-button").bounding_box()
    assert approve is not None and reject is not None
    assert approve["height"] >= 44 and reject["height"] >= 44
    assert reject["x"] - (approve["x"] + approve["width"]) >= 24 or reject["y"] >= approve["y"] + approve["height"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "queue-phone.png"))

    # Bulk approve says what it will do first.
    page.locator(f"#approval-{first.pk} input[name=ids]").check()
    page.locator(".approval-card").nth(1).locator("input[name=ids]").check()
    bulk.click()
    expect(page.locator("h1")).to_have_text("Approve 2 requests?")
    expect(page.locator(".confirm-effects")).to_contain_text("2 runs will resume")
    assert ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).count() == 2
    page.get_by_role("button", name="Yes, approve 2 requests").click()
    expect(page.locator(".messagelist")).to_contain_text("Recorded 2 approvals.")
    assert not ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).exists()
    second_run.refresh_from_db()
    assert second_run.status in (RunStatus.RUNNING, RunStatus.SUCCESS)


def test_a_viewer_sees_the_request_but_no_buttons(browser, live_server, synced, viewer):
    req = at_gate(start("scan-approve-notify"))
    page = sign_in(browser, live_server, "victor", "viewer-pass-1")
    page.goto(f"{live_server.url}/admin/approvals/pendingapproval/")
    card = page.locator(f"#approval-{req.pk}")
    expect(card).to_be_visible()
    expect(card).to_contain_text("victor lacks the permission to decide approval requests")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    expect(page.get_by_role("button", name="Reject")).to_have_count(0)
    expect(page.get_by_role("button", name="Approve selected")).to_have_count(0)
    page.locator(f"#approval-{req.pk} h2 a").click()
    expect(page.locator(f"#approval-{req.pk}")).to_be_visible()
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
