"""Secrets in agent configs never reach logs, attempt rows, API answers or admin pages; a 500 shows none."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from agents.models import Agent
from tests.conftest import ApiClient, finish
from tests.reliability.conftest import free_port
from tests.workflows.helpers import define
from workflows.services import trigger_workflow

pytestmark = pytest.mark.django_db

SECRETS = ["HDR-S3CRET-7731", "T0SECRETPATH-5521", "HMAC-S3CRET-9917", "ENV-S3CRET-4410"]


@override_settings(COMMAND_AGENT_ALLOWLIST=["/bin/false"])
def test_secrets_stay_out_of_logs_rows_api_and_admin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], api: ApiClient
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    agents = [
        {"slug": "s-http", "type": "http", "config": {"url": dead + "/x", "headers": {"Authorization": SECRETS[0]}}},
        {
            "slug": "s-hook",
            "type": "notifier",
            "config": {"channel": "webhook", "url": f"{dead}/hooks/{SECRETS[1]}", "secret": SECRETS[2], "retries": 0},
        },
        {"slug": "s-cmd", "type": "command", "config": {"command": ["/bin/false"], "env": {"API_KEY": SECRETS[3]}}},
    ]
    nodes = [
        {"key": "call", "agent": "s-http", "retry": {"max_attempts": 1}},
        {"key": "tell", "agent": "s-hook", "inputs": {"message": "hi"}, "retry": {"max_attempts": 1}},
        {"key": "run", "agent": "s-cmd", "retry": {"max_attempts": 1}},
    ]
    caplog.set_level(logging.DEBUG)
    # One workflow per agent, so that each step really runs (fail-fast would cancel its siblings).
    runs = []
    for i, node in enumerate(nodes):
        wf = define(tmp_path, f"secretive-{i}", [node], [agents[i]])
        runs.append(finish(trigger_workflow(wf, context={})[0], timeout=60))
    texts = [caplog.text, capsys.readouterr().out]
    texts += [str(r.__dict__) for r in caplog.records]
    admin = Client()
    admin.force_login(User.objects.create_superuser("root-admin", password="root-pass-1"))
    texts.append(api.get("/api/runs").content.decode())
    for i, run in enumerate(runs):
        assert run.status == "FAILED"
        assert run.attempts.get().error_message  # the step ran and failed with an explanation
        texts += [f"{a.error_message} {a.output} {a.input}" for a in run.attempts.all()]
        texts += [f"{s.error} {s.output}" for s in run.steps.all()]
        texts.append(api.get(f"/api/runs/{run.id}").content.decode())
        texts.append(api.get(f"/api/workflows/secretive-{i}").content.decode())
        texts.append(admin.get(f"/admin/workflows/workflowrun/{run.id}/change/").content.decode())
    for agent in Agent.objects.filter(slug__startswith="s-"):
        page = admin.get(f"/admin/agents/agent/{agent.pk}/change/")
        assert page.status_code == 200
        texts.append(page.content.decode())
    leaked = [(secret, i) for i, text in enumerate(texts) for secret in SECRETS if secret in text]
    assert leaked == []


@pytest.mark.urls("tests.security.urls_boom")
@pytest.mark.parametrize("path", ["/boom", "/api/boom"])
def test_a_500_shows_no_traceback_setting_or_local(path: str, settings: Any) -> None:
    settings.DEBUG = False
    response = Client(raise_request_exception=False).get(path)
    assert response.status_code == 500
    body = response.content.decode()
    assert "Internal server error" in body
    for leak in ("Traceback", "LOCAL-S3CRET-VALUE", settings.SECRET_KEY, "RuntimeError", "boom", "DATABASE"):
        assert leak not in body
