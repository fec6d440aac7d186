"""An operator approves a scan-approve-notify run in the admin through Chromium; a viewer gets no buttons."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connections
from playwright.sync_api import Browser, Page, expect, sync_playwright

from approvals.models import ApprovalRequest
from tests.approvals.conftest import at_gate, start
from tests.conftest import finish
from workflows.models import RunStatus

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the test are still sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # The live server's request threads outlive the test; they must not keep database sessions open.
    monkeypatch.setitem(connections.settings[DEFAULT_DB_ALIAS], "CONN_MAX_AGE", 0)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def sign_in(browser: Browser, live_server: Any, username: str, password: str) -> Page:
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    return page


def test_an_operator_approves_a_run_in_the_admin_and_sees_it_finish(browser, live_server, synced, operator):
    run = start("scan-approve-notify", context={"target": "web-3"})
    req = at_gate(run)
    page = sign_in(browser, live_server, "olivia", "operator-pass-1")

    page.get_by_role("link", name="Pending approvals").first.click()
    card = page.locator(f"#approval-{req.pk}")
    expect(card).to_contain_text("Scan, approve and notify — Send the scan report")
    expect(card.locator(".approval-inputs")).to_contain_text("Scan of web-3 found")
    card.get_by_label("Comment (required to reject)").fill("checked the findings")
    card.get_by_role("button", name="Approve").click()

    expect(page.locator(".messagelist")).to_contain_text(f"Approved step 'notify' of run {run.pk}")
    expect(page.locator(f"#approval-{req.pk}")).to_have_count(0)
    expect(page.locator(".empty-queue")).to_be_visible()

    assert finish(run).status == RunStatus.SUCCESS
    page.goto(f"{live_server.url}/admin/workflows/workflowrun/{run.pk}/change/")
    expect(page.locator("#content")).to_contain_text(re.compile("success", re.IGNORECASE))
    req.refresh_from_db()
    assert (req.status, req.decided_by, req.decision_comment, req.channel) == (
        ApprovalRequest.Status.APPROVED,
        operator,
        "checked the findings",
        "admin",
    )
    assert req.wait_seconds is not None and req.wait_seconds > 0


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
