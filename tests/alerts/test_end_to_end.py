"""From Grafana's POST to delivered notifications: one run, one message per configured channel."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client

from config.env import parse_allowlist
from tests.alerts.conftest import Loopback, Remote, fixture, post
from tests.conftest import finish
from workflows.models import RunStatus, WorkflowRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch, loopback: Loopback, settings: Any) -> Loopback:
    """Every channel configured, the HTTP ones pointing at one loopback server that the guard lets through."""
    settings.HTTP_ALLOW_PRIVATE_ADDRESSES = False
    settings.HTTP_ALLOWED_PRIVATE_NETWORKS = parse_allowlist("HTTP_ALLOWED_PRIVATE_NETWORKS", "127.0.0.1")
    monkeypatch.setenv("ALERT_SLACK_WEBHOOK_URL", loopback.url("/services/T/B/x"))
    monkeypatch.setenv("ALERT_DISCORD_WEBHOOK_URL", loopback.url("/api/webhooks/1/x"))
    monkeypatch.setenv("ALERT_EMAIL_TO", "oncall@example.test")
    monkeypatch.setenv("ALERT_WEBHOOK_URL", loopback.url("/hook"))
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET", "e2e-secret")
    return loopback


def test_a_grafana_alert_is_delivered_to_every_channel_once(synced: None, channels: Loopback) -> None:
    response = post(fixture("grafana_firing"))
    run = finish(WorkflowRun.objects.get(id=response.json()["workflowRunIds"][0]))
    assert run.status == RunStatus.SUCCESS, run.error
    received = {r.path: r for r in channels.received}
    assert len(channels.received) == 3 and set(received) == {"/services/T/B/x", "/api/webhooks/1/x", "/hook"}
    run_url = f"https://cc.example.test/admin/workflows/workflowrun/{run.id}/change/"
    slack = received["/services/T/B/x"].json()
    assert slack["blocks"][0]["text"]["text"] == ":red_circle: [FIRING] WorkflowFailureRate, AgentFailureSpike"
    assert {"type": "button", "text": {"type": "plain_text", "text": "Run"}, "url": run_url} in slack["blocks"][3][
        "elements"
    ]
    (embed,) = received["/api/webhooks/1/x"].json()["embeds"]
    assert embed["url"] == run_url and embed["title"].startswith("[FIRING] WorkflowFailureRate")
    hook = received["/hook"]
    signature = hmac.new(
        b"e2e-secret", f"{hook.headers['X-CommandCenter-Timestamp']}:".encode() + hook.body, hashlib.sha256
    ).hexdigest()
    assert hook.headers["X-CommandCenter-Signature"] == signature and hook.json()["links"]["run"] == run_url
    (email,) = mail.outbox
    assert email.to == ["oncall@example.test"] and run_url in email.body
    outputs: dict[str, Any] = dict(run.steps.values_list("key", "output"))
    assert all(output["delivered"] for output in outputs.values()), outputs


def test_without_channel_variables_only_the_log_delivers(synced: None, remote: Remote) -> None:
    response = post(fixture("alertmanager_firing"))
    run = finish(WorkflowRun.objects.get(id=response.json()["workflowRunIds"][0]))
    assert run.status == RunStatus.SUCCESS
    outputs: dict[str, Any] = dict(run.steps.values_list("key", "output"))
    assert outputs["log"]["delivered"] is True
    assert {k for k, v in outputs.items() if v["delivered"] is False} == {"slack", "discord", "email", "webhook"}
    assert remote.requests == [] and mail.outbox == []


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Receiver.received
    server.shutdown()
    server.server_close()


def test_a_resolved_alert_reaches_a_loopback_webhook_with_working_links(
    synced: None, receiver: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    url, received = receiver
    settings.HTTP_ALLOW_PRIVATE_ADDRESSES = True
    monkeypatch.setenv("ALERT_WEBHOOK_URL", url)
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET", "loopback-secret")
    post(fixture("grafana_firing"))
    response = post(fixture("grafana_resolved"))
    run = finish(WorkflowRun.objects.get(id=response.json()["workflowRunIds"][0]))
    assert run.status == RunStatus.SUCCESS, run.error

    # The worker delivered both runs' messages, the firing one's and the resolved one's.
    assert sorted(json.loads(body)["status"] for _, body in received) == ["firing", "resolved"]
    headers, body = next((h, b) for h, b in received if json.loads(b)["status"] == "resolved")
    timestamp = headers["X-CommandCenter-Timestamp"]
    signature = hmac.new(b"loopback-secret", f"{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    assert headers["X-CommandCenter-Signature"] == signature
    message = json.loads(body)
    assert message["status"] == "resolved" and message["headline"] == "[RESOLVED] WorkflowFailureRate"
    assert message["links"]["runbook"] == "http://localhost:9002/runbooks/workflow-failure-rate"

    client = Client()
    client.force_login(User.objects.create_superuser("root", password="root-pass-1"))
    page = client.get(urlparse(message["links"]["run"]).path)
    assert page.status_code == 200 and str(run.id) in page.content.decode()
