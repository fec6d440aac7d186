"""Each channel delivers over a real connection to a loopback server (email: Django's locmem mailer), and the
message that arrives carries the severity, the summary and the links to the run, trace, dashboard, runbook
and silence. Retry-After, 404 and a Retry-After too long for the step, as a real server answers them."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core import mail

from agents.executors.base import AgentError, StepContext
from agents.executors.notifier import NotifierExecutor
from observability.links import run_trace_url
from tests.alerts.conftest import Loopback
from workflows.models import Workflow, WorkflowRun

pytestmark = pytest.mark.django_db

RUN_ID = "00000000-0000-4000-8000-0000000000d1"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
RUN_URL = f"https://cc.example.test/admin/workflows/workflowrun/{RUN_ID}/change/"
ALERT: dict[str, Any] = {
    "title": "DiskFull",
    "status": "firing",
    "severity": "critical",
    "summary": "Disk /var on db01 is 97% full",
    "message": "Free space fell below 3%",
    "labels": {"instance": "db01"},
    "dashboard_url": "https://grafana.example.test/d/hosts?var-instance=db01",
    "runbook_url": "https://runbooks.example.test/disk-full",
    "silence_url": "https://grafana.example.test/alerting/silence/new?alertmanager=grafana",
}


@pytest.fixture
def links() -> dict[str, str]:
    """The run the notifier reports on (with a trace), and the five links every message must carry."""
    workflow = Workflow.objects.create(slug="alert-notification-test", name="alerts")
    run = WorkflowRun.objects.create(
        id=RUN_ID,
        workflow=workflow,
        workflow_version=1,
        definition={"slug": workflow.slug, "nodes": []},
        trigger="alert",
        trace_id=TRACE_ID,
        # Finished, so that the trace link's time range is fixed rather than ending "now".
        status="SUCCESS",
        started_at=datetime(2026, 11, 28, 9, 0, tzinfo=UTC),
        finished_at=datetime(2026, 11, 28, 9, 1, tzinfo=UTC),
    )
    trace = run_trace_url(run)
    assert trace and TRACE_ID in trace
    return {
        "Run": RUN_URL,
        "Trace": trace,
        "Dashboard": ALERT["dashboard_url"],
        "Runbook": ALERT["runbook_url"],
        "Silence": ALERT["silence_url"],
    }


def notify(config: dict[str, Any], *, seconds: float = 30) -> dict[str, Any]:
    ctx = StepContext(
        run_id=RUN_ID, workflow="alert-notification", step_key="n", attempt=1, deadline=time.monotonic() + seconds
    )
    return NotifierExecutor(config).execute("send", ALERT, ctx)


def test_slack_receives_block_kit_with_severity_summary_and_every_link(
    loopback: Loopback, links: dict[str, str]
) -> None:
    out = notify({"channel": "slack", "url": loopback.url("/services/T000/B000/slack")})
    assert out["delivered"] is True
    (request,) = loopback.received
    assert request.method == "POST" and request.path == "/services/T000/B000/slack"
    assert request.headers["Content-Type"] == "application/json"
    body = request.json()
    assert body["text"] == "[FIRING] DiskFull: Disk /var on db01 is 97% full"
    header, section, facts, actions, context = body["blocks"]
    assert header["text"]["text"] == ":red_circle: [FIRING] DiskFull"
    assert section["text"]["text"] == "*Disk /var on db01 is 97% full*\nFree space fell below 3%"
    assert {"type": "mrkdwn", "text": "*Severity*\ncritical"} in facts["fields"]
    assert {b["text"]["text"]: b["url"] for b in actions["elements"]} == links
    assert RUN_ID in context["elements"][0]["text"]


def test_discord_receives_an_embed_with_severity_summary_and_every_link(
    loopback: Loopback, links: dict[str, str]
) -> None:
    notify({"channel": "discord", "url": loopback.url("/api/webhooks/1/discord")})
    (request,) = loopback.received
    assert request.path == "/api/webhooks/1/discord" and request.headers["Content-Type"] == "application/json"
    body = request.json()
    assert body["allowed_mentions"] == {"parse": []}
    (embed,) = body["embeds"]
    assert embed["title"] == "[FIRING] DiskFull" and embed["url"] == RUN_URL
    assert embed["description"] == "Disk /var on db01 is 97% full\n\nFree space fell below 3%"
    assert {"name": "Severity", "value": "critical", "inline": True} in embed["fields"]
    assert embed["fields"][-1] == {
        "name": "Links",
        "value": " · ".join(f"[{label}]({url})" for label, url in links.items()),
        "inline": False,
    }


def test_the_webhook_receives_signed_json_with_severity_summary_and_every_link(
    loopback: Loopback, links: dict[str, str]
) -> None:
    notify({"channel": "webhook", "url": loopback.url("/hook"), "secret": "loopback-signing-key"})
    (request,) = loopback.received
    # The signature checks out over the bytes that arrived, as a receiver would check it.
    timestamp = request.headers["X-CommandCenter-Timestamp"]
    expected = hmac.new(b"loopback-signing-key", f"{timestamp}:".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-CommandCenter-Signature"], expected)
    assert abs(int(timestamp) - time.time()) < 60
    body = request.json()
    assert body["severity"] == "critical" and body["summary"] == "Disk /var on db01 is 97% full"
    assert body["status"] == "firing" and body["headline"] == "[FIRING] DiskFull"
    assert body["links"] == {label.lower(): url for label, url in links.items()}
    assert body["run"] == {"id": RUN_ID, "workflow": "alert-notification"}


def test_an_unsigned_webhook_carries_no_signature(loopback: Loopback, links: dict[str, str]) -> None:
    notify({"channel": "webhook", "url": loopback.url("/hook")})
    (request,) = loopback.received
    assert "X-CommandCenter-Signature" not in request.headers
    assert request.json()["links"]["trace"] == links["Trace"]


def test_email_carries_severity_summary_and_every_link(links: dict[str, str]) -> None:
    notify({"channel": "email", "to": "oncall@example.test"})
    (message,) = mail.outbox
    assert isinstance(message, mail.EmailMultiAlternatives)
    assert message.subject == "[CommandCenter] [FIRING] DiskFull"
    assert "Severity: critical" in message.body and "Disk /var on db01 is 97% full" in message.body
    assert all(f"{label}: {url}" in message.body for label, url in links.items())
    html, _ = message.alternatives[0]
    assert isinstance(html, str) and "<td>critical</td>" in html
    # format_html escapes & in the URLs, as HTML requires.
    assert all(f"href='{url.replace('&', '&amp;')}'" in html for url in links.values())


def test_a_429_with_retry_after_is_retried_after_the_delay_it_asks(loopback: Loopback, links: dict[str, str]) -> None:
    loopback.answer(429, b'{"message": "You are being rate limited.", "retry_after": 2}', Retry_After="2")
    out = notify({"channel": "discord", "url": loopback.url("/api/webhooks/1/discord"), "retries": 2})
    assert out["delivered"] is True
    first, second = loopback.received
    assert second.at - first.at >= 1.95
    assert first.body == second.body


def test_a_404_fails_permanently_without_a_retry(loopback: Loopback, links: dict[str, str]) -> None:
    loopback.answer(404, b"no_service")
    with pytest.raises(AgentError) as error:
        notify({"channel": "slack", "url": loopback.url("/services/T000/B000/gone"), "retries": 3})
    assert error.value.permanent and "404" in str(error.value) and "no_service" in str(error.value)
    assert len(loopback.received) == 1


def test_a_retry_after_past_the_step_deadline_fails_the_attempt_and_names_the_delay(
    loopback: Loopback, links: dict[str, str]
) -> None:
    loopback.answer(429, b"slow down", Retry_After="30")
    with pytest.raises(AgentError) as error:
        notify({"channel": "webhook", "url": loopback.url("/hook"), "retries": 3}, seconds=3)
    assert not error.value.permanent and error.value.retry_after == 30.0
    assert len(loopback.received) == 1
