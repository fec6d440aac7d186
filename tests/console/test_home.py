"""The admin home: runs by status in the last 24 h, pending approvals, Grafana dashboards."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from django.urls import reverse

from tests.approvals.conftest import at_gate, start
from workflows.models import RunStatus, StepStatus

HOME = reverse("admin:index")


def counts(body: str) -> dict[str, int]:
    found = re.findall(r'<li data-status="(\w+)">.*?<span class="count">(\d+)</span>', body)
    return {status: int(n) for status, n in found}


def test_runs_of_the_last_day_are_counted_by_status(operator_client, make_run):
    make_run(status=RunStatus.FAILED, step_statuses={"doomed": StepStatus.FAILED})
    make_run(status=RunStatus.SUCCESS)
    make_run(status=RunStatus.SUCCESS)
    make_run(status=RunStatus.SUCCESS, age=timedelta(hours=25))
    body = operator_client.get(HOME).content.decode()
    found = counts(body)
    assert found["SUCCESS"] == 2 and found["FAILED"] == 1 and found["RUNNING"] == 0
    assert "Runs in the last 24 h · 3" in body


def test_a_status_count_links_to_the_same_runs_in_the_list(operator_client, make_run):
    make_run(status=RunStatus.SUCCESS)
    make_run(status=RunStatus.SUCCESS, age=timedelta(hours=25))
    body = operator_client.get(HOME).content.decode()
    found = re.search(r'<li data-status="SUCCESS"><a href="([^"]+)"', body)
    assert found is not None
    href = found.group(1).replace("&amp;", "&")
    assert parse_qs(urlsplit(href).query)["status__exact"] == ["SUCCESS"]
    listed = operator_client.get(href).context["cl"].result_list
    assert len(listed) == 1


def test_the_pending_approval_count_links_to_the_queue(operator_client, synced, viewer):
    at_gate(start("scan-approve-notify", user=viewer))
    body = operator_client.get(HOME).content.decode()
    match = re.search(
        r'<a href="([^"]+)" class="pending-approvals-link"><span class="console-big attention">1</span>', body
    )
    assert match is not None
    assert operator_client.get(match.group(1)).status_code == 200


def test_grafana_dashboards_are_linked_only_with_grafana_url(operator_client, settings, db):
    settings.GRAFANA_URL = "https://grafana.example.test"
    body = operator_client.get(HOME).content.decode()
    assert 'href="https://grafana.example.test/d/workflow-overview?orgId=1"' in body
    settings.GRAFANA_URL = ""
    body = operator_client.get(HOME).content.decode()
    assert "grafana-dashboards" not in body and "grafana.example.test" not in body


def test_a_user_without_run_permissions_sees_no_run_counts(client, outsider):
    outsider.is_staff = True
    outsider.save()
    client.force_login(outsider)
    body = client.get(HOME).content.decode()
    assert "console-card runs-by-status" not in body and "console-card pending-approvals" not in body


def test_there_is_no_view_site_link_and_the_bare_host_opens_the_console(operator_client, client):
    body = operator_client.get(HOME).content.decode()
    assert "View site" not in body
    response = client.get("/")
    assert (response.status_code, response["Location"]) == (302, HOME)


def test_statuses_are_written_as_words(operator_client, make_run):
    make_run(status=RunStatus.WAITING_APPROVAL)
    body = operator_client.get(HOME).content.decode()
    assert re.search(
        r'<li data-status="WAITING_APPROVAL"><a href="[^"]+"><span class="[^"]+">Waiting for approval</span>', body
    )
    assert ">WAITING_APPROVAL<" not in body
