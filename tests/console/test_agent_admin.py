"""Agents in the admin: config validated per type, secret values masked and kept."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from agents.admin import MASK
from agents.models import Agent
from tests.console.forms import change_page_data

SECRET = "Bearer s3cret-token-value"


@pytest.fixture
def http_agent(db) -> Agent:
    return Agent.objects.create(
        slug="pager",
        type="http",
        config={"url": "https://hooks.example.test/x", "method": "POST", "headers": {"Authorization": SECRET}},
    )


def url(agent: Agent) -> str:
    return reverse("admin:agents_agent_change", args=[agent.pk])


def posted_config(admin_client, agent: Agent, change) -> tuple[Any, dict]:
    data = change_page_data(admin_client.get(url(agent)))
    config = json.loads(data["config"])
    change(config)
    data["config"] = json.dumps(config)
    return admin_client.post(url(agent), data), config


def test_the_form_never_shows_a_secret_value(admin_client, http_agent):
    body = admin_client.get(url(http_agent)).content.decode()
    assert "s3cret" not in body
    assert MASK in body and "Authorization" in body and "hooks.example.test" in body


def test_submitting_the_mask_unchanged_keeps_the_stored_secret(admin_client, http_agent):
    response, _ = posted_config(admin_client, http_agent, lambda c: c.update(url="https://hooks.example.test/y"))
    assert response.status_code == 302
    http_agent.refresh_from_db()
    assert http_agent.config["headers"] == {"Authorization": SECRET}
    assert http_agent.config["url"] == "https://hooks.example.test/y"


def test_a_new_secret_value_replaces_the_stored_one(admin_client, http_agent):
    response, _ = posted_config(
        admin_client, http_agent, lambda c: c["headers"].update({"Authorization": "Bearer new", "X-Team": "ops"})
    )
    assert response.status_code == 302
    http_agent.refresh_from_db()
    assert http_agent.config["headers"] == {"Authorization": "Bearer new", "X-Team": "ops"}


def test_a_mask_with_nothing_stored_behind_it_is_refused(admin_client, http_agent):
    response, _ = posted_config(admin_client, http_agent, lambda c: c["headers"].update({"X-New": MASK}))
    assert response.status_code == 200
    assert "headers.X-New: enter the value" in str(response.context["adminform"].form.errors["config"])


def test_config_is_validated_by_the_agent_type(admin_client, http_agent):
    response, _ = posted_config(admin_client, http_agent, lambda c: c.update(method="FETCH", url="ftp://x"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["config"]
    assert "method: 'FETCH' is not one of" in errors[0]
    assert errors[1] == "url: must start with http:// or https://"
    assert "s3cret" not in response.content.decode()
    http_agent.refresh_from_db()
    assert http_agent.config["method"] == "POST"


def test_a_new_agent_is_validated_for_its_type(admin_client, db):
    response = admin_client.post(
        reverse("admin:agents_agent_add"),
        {"slug": "runner", "type": "command", "config": json.dumps({"command": "ls -l"}), "enabled": "on"},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["config"] == [
        "command: must be a non-empty list of strings (argv)"
    ]
    assert not Agent.objects.filter(slug="runner").exists()


def test_a_user_who_may_only_view_agents_sees_the_masked_config(http_agent):
    user = User.objects.create_user("reader", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_agent"))
    client = Client()
    client.force_login(user)
    body = client.get(url(http_agent)).content.decode()
    assert "s3cret" not in body
    assert MASK in body and "hooks.example.test" in body
