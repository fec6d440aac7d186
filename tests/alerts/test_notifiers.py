"""Each notifier channel, against agents.http.send standing in for the remote service (email: locmem)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest
from django.core import mail

from agents.executors.base import AgentError, StepContext
from agents.executors.notifier import NotifierExecutor
from tests.alerts.conftest import Remote

SLACK = "https://hooks.slack.test/services/T000/B000/secretpart"
DISCORD = "https://discord.test/api/webhooks/1/secrettoken"
HOOK = "https://receiver.test/hook"
RUN_ID = "00000000-0000-0000-0000-000000000001"

FIRING = {
    "title": "WorkflowFailureRate",
    "status": "firing",
    "severity": "critical",
    "summary": "High workflow failure rate (23%)",
    "message": "More than 10% of workflows are failing",
    "labels": {"grafana_folder": "CommandCenter", "note": "<@everyone> & co"},
    "dashboard_url": "https://grafana.test/d/workflow-overview",
    "runbook_url": "https://git.test/runbooks/workflow-failure-rate.md",
    "silence_url": "https://grafana.test/alerting/silence/new",
}
RESOLVED = {**FIRING, "status": "resolved"}
RUN_URL = f"https://cc.example.test/admin/workflows/workflowrun/{RUN_ID}/change/"


def ctx() -> StepContext:
    return StepContext(
        run_id=RUN_ID, workflow="alert-notification", step_key="n", attempt=1, deadline=time.monotonic() + 30
    )


def notify(config: dict[str, Any], inputs: dict[str, Any] = FIRING) -> dict[str, Any]:
    return NotifierExecutor(config).execute("send", inputs, ctx())


@pytest.fixture(autouse=True)
def _db(db: None) -> None:
    """The notifier looks the run up for its trace link."""


def test_slack_posts_block_kit_with_links(remote: Remote) -> None:
    out = notify({"channel": "slack", "url": SLACK})
    assert out == {"channel": "slack", "status": "firing", "delivered": True, "blocks": 5}
    request = remote.requests[0]
    assert request.method == "POST" and str(request.url) == SLACK
    assert request.headers["Content-Type"] == "application/json"
    body = remote.json()
    assert body["text"] == "[FIRING] WorkflowFailureRate: High workflow failure rate (23%)"
    header, section, facts, actions, context = body["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": ":red_circle: [FIRING] WorkflowFailureRate"},
    }
    assert section["text"] == {
        "type": "mrkdwn",
        "text": "*High workflow failure rate (23%)*\nMore than 10% of workflows are failing",
    }
    assert {"type": "mrkdwn", "text": "*Severity*\ncritical"} in facts["fields"]
    assert {"type": "mrkdwn", "text": "*note*\n&lt;@everyone&gt; &amp; co"} in facts["fields"]
    buttons = {b["text"]["text"]: b["url"] for b in actions["elements"]}
    assert all(b["type"] == "button" for b in actions["elements"])
    assert buttons == {
        "Run": RUN_URL,
        "Dashboard": FIRING["dashboard_url"],
        "Runbook": FIRING["runbook_url"],
        "Silence": FIRING["silence_url"],
    }
    assert context["type"] == "context" and RUN_ID in context["elements"][0]["text"]


def test_slack_says_resolved(remote: Remote) -> None:
    notify({"channel": "slack", "url": SLACK}, RESOLVED)
    body = remote.json()
    assert body["blocks"][0]["text"]["text"] == ":white_check_mark: [RESOLVED] WorkflowFailureRate"
    assert body["blocks"][1]["text"]["text"].startswith("*Resolved:* High workflow failure rate")


def test_slack_limits_are_respected(remote: Remote) -> None:
    notify(
        {"channel": "slack", "url": SLACK}, {**FIRING, "title": "T" * 500, "labels": {f"l{i}": "v" for i in range(30)}}
    )
    blocks = remote.json()["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150
    assert len(blocks[2]["fields"]) == 10


def test_discord_posts_one_embed_without_mentions(remote: Remote) -> None:
    notify({"channel": "discord", "url": DISCORD, "username": "CommandCenter"})
    body = remote.json()
    assert body["allowed_mentions"] == {"parse": []}
    assert body["username"] == "CommandCenter"
    (embed,) = body["embeds"]
    assert embed["title"] == "[FIRING] WorkflowFailureRate"
    assert embed["description"] == "High workflow failure rate (23%)\n\nMore than 10% of workflows are failing"
    assert embed["url"] == RUN_URL
    assert embed["color"] == 0xD32F2F
    assert {"name": "Severity", "value": "critical", "inline": True} in embed["fields"]
    links = embed["fields"][-1]
    assert links["name"] == "Links" and f"[Run]({RUN_URL})" in links["value"]
    assert f"[Runbook]({FIRING['runbook_url']})" in links["value"]
    assert embed["timestamp"] and embed["footer"] == {"text": "CommandCenter · alert-notification"}


def test_discord_says_resolved_in_green(remote: Remote) -> None:
    notify({"channel": "discord", "url": DISCORD}, RESOLVED)
    (embed,) = remote.json()["embeds"]
    assert embed["title"].startswith("[RESOLVED]") and embed["color"] == 0x2E7D32
    assert embed["description"].startswith("Resolved: ")


def test_discord_stays_within_the_embed_budget(remote: Remote) -> None:
    labels = {f"label{i}": "v" * 300 for i in range(40)}
    notify({"channel": "discord", "url": DISCORD}, {**FIRING, "message": "m" * 5000, "labels": labels})
    (embed,) = remote.json()["embeds"]
    total = (
        len(embed["title"]) + len(embed["description"]) + sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
    )
    assert total <= 6000 and len(embed["fields"]) <= 25
    assert embed["fields"][-1]["name"] == "Links"


def test_the_webhook_is_signed_over_timestamp_and_body(remote: Remote) -> None:
    out = notify({"channel": "webhook", "url": HOOK, "secret": "s3cret"}, RESOLVED)
    assert out["signed"] is True
    request = remote.requests[0]
    timestamp = request.headers["X-CommandCenter-Timestamp"]
    expected = hmac.new(b"s3cret", f"{timestamp}:".encode() + request.content, hashlib.sha256).hexdigest()
    assert request.headers["X-CommandCenter-Signature"] == expected
    assert abs(int(timestamp) - time.time()) < 5
    body = json.loads(request.content)
    assert body["status"] == "resolved" and body["resolved"] is True and body["headline"].startswith("[RESOLVED]")
    assert body["links"]["run"] == RUN_URL and body["links"]["runbook"] == FIRING["runbook_url"]
    assert body["run"] == {"id": RUN_ID, "workflow": "alert-notification"}
    assert body["fields"]["grafana_folder"] == "CommandCenter"


def test_the_webhook_is_unsigned_without_a_secret(remote: Remote) -> None:
    assert notify({"channel": "webhook", "url": HOOK})["signed"] is False
    assert "X-CommandCenter-Signature" not in remote.requests[0].headers


def test_secrets_may_come_from_the_environment(remote: Remote, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    monkeypatch.setenv("HOOK_URL", HOOK)
    monkeypatch.setenv("HOOK_SECRET_FILE", str(secret_file))
    notify({"channel": "webhook", "url_env": "HOOK_URL", "secret_env": "HOOK_SECRET"})
    request = remote.requests[0]
    timestamp = request.headers["X-CommandCenter-Timestamp"]
    expected = hmac.new(b"from-a-file", f"{timestamp}:".encode() + request.content, hashlib.sha256).hexdigest()
    assert str(request.url) == HOOK and request.headers["X-CommandCenter-Signature"] == expected


def test_an_unset_variable_fails_unless_the_channel_is_optional(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_URL", raising=False)
    with pytest.raises(AgentError, match="NOT_SET_URL is not set") as error:
        notify({"channel": "slack", "url_env": "NOT_SET_URL"})
    assert error.value.permanent
    out = notify({"channel": "slack", "url_env": "NOT_SET_URL", "optional": True})
    assert out["delivered"] is False and "NOT_SET_URL is not set" in out["skipped"]
    assert remote.requests == []


def test_a_404_fails_at_once_and_permanently_without_leaking_the_url(remote: Remote) -> None:
    remote.answer(httpx.Response(404, text="no_service"))
    with pytest.raises(AgentError) as error:
        notify({"channel": "slack", "url": SLACK, "retries": 3})
    assert error.value.permanent
    assert "404" in str(error.value) and "hooks.slack.test" in str(error.value)
    assert "secretpart" not in str(error.value)
    assert len(remote.requests) == 1


def test_a_5xx_is_retried_then_fails_transiently(remote: Remote) -> None:
    remote.answer(*(httpx.Response(503, text="busy") for _ in range(3)))
    with pytest.raises(AgentError) as error:
        notify({"channel": "discord", "url": DISCORD, "retries": 2})
    assert not error.value.permanent
    assert len(remote.requests) == 3
    assert "secrettoken" not in str(error.value)


def test_a_429_is_retried_until_it_succeeds(remote: Remote) -> None:
    remote.answer(httpx.Response(429, headers={"Retry-After": "0"}, json={"retry_after": 0}), httpx.Response(204))
    assert notify({"channel": "discord", "url": DISCORD})["delivered"] is True
    assert len(remote.requests) == 2


def test_email_goes_through_the_mailer_with_text_and_html(settings: Any) -> None:
    settings.DEFAULT_FROM_EMAIL = "alerts@cc.example.test"
    out = notify(
        {"channel": "email", "to": "oncall@example.test, lead@example.test"}, {**FIRING, "title": "Disk\nfull"}
    )
    assert out == {"channel": "email", "status": "firing", "delivered": True, "recipients": 2}
    (message,) = mail.outbox
    assert isinstance(message, mail.EmailMultiAlternatives)
    assert message.subject == "[CommandCenter] [FIRING] Disk full"
    assert message.to == ["oncall@example.test", "lead@example.test"]
    assert message.from_email == "alerts@cc.example.test"
    assert "High workflow failure rate (23%)" in message.body and f"Run: {RUN_URL}" in message.body
    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html" and isinstance(html, str)
    assert f"href='{RUN_URL}'" in html and "&lt;@everyone&gt; &amp; co" in html


def test_email_says_resolved() -> None:
    notify({"channel": "email", "to": ["oncall@example.test"]}, RESOLVED)
    (message,) = mail.outbox
    assert message.subject.startswith("[CommandCenter] [RESOLVED]")
    assert "This alert is resolved." in message.body


def test_the_log_channel_logs_and_keeps_the_old_contract(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="agents.notifier"):
        out = notify({"channel": "log"}, {"message": "Scan of x found 2 issue(s)"})
    assert out == {"channel": "log", "status": "", "delivered": True, "message": "Scan of x found 2 issue(s)"}
    assert getattr(caplog.records[-1], "notification", None) == "Scan of x found 2 issue(s)"
    with pytest.raises(AgentError, match="non-empty 'message'"):
        notify({"channel": "log"}, {"message": "  "})


def test_the_trace_link_points_at_grafana_explore(remote: Remote, settings: Any) -> None:
    from workflows.models import Workflow, WorkflowRun

    workflow = Workflow.objects.create(slug="w", name="w")
    run = WorkflowRun.objects.create(
        id=RUN_ID,
        workflow=workflow,
        workflow_version=1,
        definition={"slug": "w", "nodes": []},
        trigger="alert",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    )
    notify({"channel": "webhook", "url": HOOK})
    trace = remote.json()["links"]["trace"]
    assert trace.startswith("https://grafana.example.test/explore?") and run.trace_id in trace


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"channel": "pager"}, "channel: 'pager' is not one of"),
        ({"channel": "slack"}, "url: channel slack needs url"),
        ({"channel": "email"}, "to: channel email needs to"),
        ({"channel": "webhook", "url": HOOK, "retries": "many"}, "retries: must be a non-negative number"),
    ],
)
def test_config_problems_are_named_at_sync_time(config: dict[str, Any], problem: str) -> None:
    assert any(p.startswith(problem) for p in NotifierExecutor.validate_config(config)), (
        NotifierExecutor.validate_config(config)
    )
