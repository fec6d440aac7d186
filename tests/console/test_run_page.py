"""The run page: summary, timeline, attempts, approvals, transitions and the Grafana links."""

from __future__ import annotations

import re
from urllib.parse import unquote

from django.urls import reverse

from approvals.models import ApprovalRequest
from tests.approvals.conftest import at_gate, start
from workflows.models import RunStatus, StepStatus


def page(client, run) -> str:
    response = client.get(reverse("admin:workflows_workflowrun_change", args=[run.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_page_shows_summary_context_steps_attempts_and_transitions(operator_client, make_run):
    run = make_run(status=RunStatus.FAILED, step_statuses={"doomed": StepStatus.FAILED}, context={"note": "x<y>"})
    body = page(operator_client, run)
    assert "run-status run-status-failed" in body
    assert str(run.pk) in body and run.trace_id in body
    assert "&quot;note&quot;: &quot;x&lt;y&gt;&quot;" in body  # formatted JSON, escaped
    assert re.search(r'<tr data-step="doomed" data-attempt="1">', body)
    assert "<strong>AgentError</strong>: boom" in body
    assert body.count('<details class="attempt-input">') == 2
    assert body.count('<details class="attempt-output">') == 1  # only the step that succeeded has output
    assert "run-transitions" in body


def test_the_timeline_draws_one_row_per_step_with_attempt_bars(operator_client, make_run):
    run = make_run(status=RunStatus.FAILED, step_statuses={"doomed": StepStatus.FAILED})
    body = page(operator_client, run)
    tracks = re.findall(r'<div class="timeline-track" data-step="(\w+)" data-status="(\w+)">', body)
    assert tracks == [("prepare", "SUCCESS"), ("doomed", "FAILED")]
    bars = re.findall(
        r'class="timeline-bar attempt (\w+)[^"]*" data-kind="attempt" style="left:([\d.]+)%;width:([\d.]+)%"', body
    )
    assert [b[0] for b in bars] == ["success", "failed"]
    first, second = (float(b[1]) for b in bars)
    assert 0 <= first < second < 100


def test_approval_waits_and_decisions_are_on_the_page(operator_client, run_operator, synced, viewer):
    run = start("scan-approve-notify", context={"target": "web-3"}, user=viewer)
    req = at_gate(run)
    body = page(operator_client, run)
    assert 'data-kind="approval"' in body
    assert "run-approvals" in body and "notify" in body
    from approvals import services

    services.decide(req.pk, acting_user=run_operator, decision="approve", comment="looks fine", channel="admin")
    req.refresh_from_db()
    assert req.status == ApprovalRequest.Status.APPROVED
    body = page(operator_client, run)
    assert "olivia — <strong>approve</strong> via admin" in body
    assert "“looks fine”" in body


def test_grafana_links_point_at_the_runs_trace_and_each_attempts_span(operator_client, make_run, settings):
    settings.GRAFANA_URL = "https://grafana.example.test"
    run = make_run()
    body = page(operator_client, run)
    found = re.search(r'class="button grafana trace-link" href="([^"]+)"', body)
    assert found is not None
    trace = found.group(1)
    assert f'"query":"{run.trace_id}"' in unquote(trace.replace("&amp;", "&"))
    spans = re.findall(r'class="span-link" href="([^"]+)"', body)
    assert len(spans) == 2
    for attempt, href in zip(run.attempts.order_by("started_at"), spans, strict=True):
        assert f'"spanId":"{attempt.span_id}"' in unquote(href.replace("&amp;", "&"))
    assert "logs-link" in body and "/d/workflow-overview?" in body


def test_without_grafana_url_no_grafana_link_is_rendered(operator_client, make_run, settings):
    settings.GRAFANA_URL = ""
    body = page(operator_client, make_run())
    assert "grafana" not in re.sub(r"<style.*?</style>", "", body, flags=re.S).lower()


def test_an_alert_run_shows_its_trigger_detail(operator_client, make_run):
    run = make_run(trigger="alert")
    run.trigger_detail = "alert group HighErrorRate"
    run.save(update_fields=["trigger_detail"])
    assert "alert group HighErrorRate" in page(operator_client, run)


def test_a_rerun_links_back_to_its_original(operator_client, make_run):
    original = make_run()
    rerun = make_run()
    rerun.rerun_of = original
    rerun.save(update_fields=["rerun_of"])
    assert reverse("admin:workflows_workflowrun_change", args=[original.pk]) in page(operator_client, rerun)
    assert 'class="mono rerun-link"' in page(operator_client, original)


def test_the_run_page_needs_the_view_permission(client, outsider, make_run):
    outsider.is_staff = True
    outsider.save()
    client.force_login(outsider)
    response = client.get(reverse("admin:workflows_workflowrun_change", args=[make_run().pk]))
    assert response.status_code == 403


def test_an_alert_run_links_to_its_alert_and_the_delivery_that_carried_it(operator_client, make_run):
    from observability.models import AlertDelivery, AlertEvent

    run = make_run(trigger="alert")
    delivery = AlertDelivery.objects.create(source="grafana", status="firing", outcome="processed")
    delivery.runs.add(run)
    event = AlertEvent.objects.create(
        fingerprint="abc123",
        status="firing",
        starts_at=run.created_at,
        alertname="HighErrorRate",
        notified_at=run.created_at,
        delivery=delivery,
    )
    event.runs.add(run)
    body = page(operator_client, run)
    event_url = reverse("admin:observability_alertevent_change", args=[event.pk])
    delivery_url = reverse("admin:observability_alertdelivery_change", args=[delivery.pk])
    assert re.search(rf'<a class="alert-link" href="{event_url}">HighErrorRate firing since', body)
    assert f'<a class="alert-record" href="{delivery_url}">alert delivery {delivery.pk}' in body
