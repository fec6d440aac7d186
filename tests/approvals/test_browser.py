"""An operator approves a scan-approve-notify run in the admin through Chromium; a viewer gets no buttons."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from approvals.models import ApprovalRequest
from tests.approvals.conftest import at_gate, start
from tests.browser import sign_in
from tests.conftest import work
from workflows.models import RunStatus, WorkflowRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def reload_until_status(page: Page, run: WorkflowRun, wanted: str, passes: int = 50) -> None:
    """Lets the runner work through what is queued, a pass at a time, and reloads the run page after each
    pass until the page's run status is ``wanted``."""
    for _ in range(passes):
        if page.locator("#run-status").get_attribute("data-run-status") == wanted:
            return
        work()
        page.reload()
    run.refresh_from_db()
    raise AssertionError(f"the run page never showed {wanted}; the run is {run.status}")


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

    # The run page shows the run's own status, not a step's: the gate is released but nothing has run yet.
    page.goto(f"{live_server.url}/admin/workflows/workflowrun/{run.pk}/change/")
    status = page.locator("#run-status")
    expect(status).to_have_attribute("data-run-status", "RUNNING")
    reload_until_status(page, run, "SUCCESS")
    expect(status).to_have_attribute("data-run-status", "SUCCESS")
    expect(status.locator(".run-status")).to_have_text("SUCCESS")
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
