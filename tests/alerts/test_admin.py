"""Operators see every delivery with its outcome, and replay one that failed."""

from __future__ import annotations

import html
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from alerts.models import AlertDelivery
from tests.alerts.conftest import fixture, post
from workflows.models import Workflow, WorkflowRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client() -> Client:
    user = User.objects.create_superuser("root", password="root-pass-1")
    client = Client()
    client.force_login(user)
    return client


def test_the_list_shows_outcome_error_and_runs(synced: None, admin_client: Client) -> None:
    post(fixture("grafana_firing"))
    post(raw=b"{nope")
    page = admin_client.get(reverse("admin:alerts_alertdelivery_changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "processed" in html and "rejected" in html and "malformed JSON" in html
    run = WorkflowRun.objects.get()
    assert reverse("admin:workflows_workflowrun_change", args=[run.pk]) in html


def test_the_detail_page_shows_the_body_but_no_authorization(synced: None, admin_client: Client) -> None:
    response = post(fixture("alertmanager_firing"))
    page = admin_client.get(reverse("admin:alerts_alertdelivery_change", args=[response.json()["deliveryId"]]))
    html = page.content.decode()
    assert "ServiceDown" in html
    assert "test-webhook-token" not in html


def test_replaying_a_failed_delivery_starts_its_run(synced: None, admin_client: Client) -> None:
    Workflow.objects.filter(slug="alert-notification").update(enabled=False)
    response = post(fixture("alertmanager_firing"))
    assert response.status_code == 503
    delivery = AlertDelivery.objects.get()
    assert delivery.outcome == AlertDelivery.Outcome.ERROR
    assert "is disabled" in delivery.error

    Workflow.objects.filter(slug="alert-notification").update(enabled=True)
    page = admin_client.post(
        reverse("admin:alerts_alertdelivery_changelist"),
        {"action": "replay", "_selected_action": [delivery.pk]},
        follow=True,
    )
    assert page.status_code == 200
    delivery.refresh_from_db()
    run = WorkflowRun.objects.get()
    assert delivery.outcome == AlertDelivery.Outcome.PROCESSED
    assert list(delivery.runs.all()) == [run]
    assert f"started run(s) {run.pk}" in page.content.decode()


def test_replaying_a_processed_delivery_starts_nothing_new(synced: None, admin_client: Client) -> None:
    post(fixture("alertmanager_firing"))
    delivery = AlertDelivery.objects.get()
    page = admin_client.post(
        reverse("admin:alerts_alertdelivery_changelist"),
        {"action": "replay", "_selected_action": [delivery.pk]},
        follow=True,
    )
    assert "all deduplicated" in page.content.decode()
    assert WorkflowRun.objects.count() == 1


def test_viewers_cannot_replay(synced: None, viewer: Any) -> None:
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_alertdelivery"))
    client = Client()
    client.force_login(viewer)
    post(raw=b"{nope")
    page = client.get(reverse("admin:alerts_alertdelivery_changelist"))
    assert page.status_code == 200
    assert 'value="replay"' not in page.content.decode()


def test_every_rejected_delivery_shows_why_in_the_list_and_on_its_page(synced: None, admin_client: Client) -> None:
    import gzip

    bad = fixture("alertmanager_firing")
    bad["alerts"][0]["startsAt"] = "soon"
    post(bad)
    post(raw=b"{nope")
    post(raw=b"status=firing", content_type="text/plain")
    post(raw=b"\x1f\x8b garbage", headers={"Content-Encoding": "gzip"})
    post(raw=gzip.compress(b"{}"), headers={"Content-Encoding": "br"})
    rejected = list(AlertDelivery.objects.filter(outcome=AlertDelivery.Outcome.REJECTED))
    assert len(rejected) == 5 and all(d.error for d in rejected)
    listing = admin_client.get(reverse("admin:alerts_alertdelivery_changelist")).content.decode()
    for delivery in rejected:
        page = admin_client.get(reverse("admin:alerts_alertdelivery_change", args=[delivery.pk]))
        shown = html.escape(delivery.error, quote=True)
        assert shown in page.content.decode(), delivery.error
        assert f"title='{shown}'" in listing or f'title="{shown}"' in listing, delivery.error
    assert "alerts[0].startsAt must be an RFC 3339 time, not &#x27;soon&#x27;" in listing
    assert (
        "the bytes received could not be decoded"
        in admin_client.get(reverse("admin:alerts_alertdelivery_change", args=[rejected[1].pk])).content.decode()
    )
