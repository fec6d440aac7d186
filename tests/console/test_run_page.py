"""The run page: summary, timeline, attempts, approvals, transitions and the Grafana links."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import unquote

from django.urls import reverse
from django.utils import timezone

from agents.models import AgentRun
from approvals.models import ApprovalRequest
from tests.approvals.conftest import at_gate, start
from tests.conftest import finish
from workflows.display import format_duration
from workflows.models import RunStatus, RunTransition, StepStatus, WorkflowRun


def page(client, run) -> str:
    response = client.get(reverse("admin:workflows_workflowrun_change", args=[run.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_page_shows_summary_context_steps_attempts_and_transitions(operator_client, make_run):
    run = make_run(status=RunStatus.FAILED, step_statuses={"doomed": StepStatus.FAILED}, context={"note": "x<y>"})
    body = page(operator_client, run)
    assert 'run-status run-status-failed" data-status="FAILED">Failed<' in body
    assert str(run.pk) in body and run.trace_id in body
    assert "&quot;note&quot;: &quot;x&lt;y&gt;&quot;" in body  # formatted JSON, escaped
    assert re.search(r'<tr data-step="doomed" data-attempt="1" id="attempts-doomed">', body)
    assert "<strong>AgentError</strong>: boom" in body
    assert body.count('<details class="attempt-input"') == 2
    assert body.count('<details class="attempt-output"') == 1  # only the step that succeeded has output
    assert "run-transitions" in body


def test_the_timeline_draws_one_row_per_step_with_attempt_bars(operator_client, make_run):
    run = make_run(status=RunStatus.FAILED, step_statuses={"doomed": StepStatus.FAILED})
    body = page(operator_client, run)
    tracks = re.findall(r'<div class="timeline-track" data-step="(\w+)" data-status="(\w+)">', body)
    assert tracks == [("prepare", "SUCCESS"), ("doomed", "FAILED")]
    bars = re.findall(
        r'class="timeline-bar attempt status-(\w+)[^"]*" id="[\w-]+" data-kind="attempt" data-round="1" '
        r'style="left:([\d.]+)%;width:([\d.]+)%" tabindex="0" role="img" aria-label="[^"]+"',
        body,
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
    resumed = run.transitions.get(from_status=RunStatus.WAITING_APPROVAL, to_status=RunStatus.RUNNING)
    assert (resumed.actor, resumed.reason) == ("olivia", "step 'notify' approved by olivia")
    body = page(operator_client, run)
    assert "olivia — <strong>approve</strong> via admin" in body
    assert "“looks fine”" in body
    assert '<td class="transition-actor">olivia</td><td>step &#x27;notify&#x27; approved by olivia</td>' in body


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
    from alerts.models import AlertDelivery, AlertEvent

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
    event_url = reverse("admin:alerts_alertevent_change", args=[event.pk])
    delivery_url = reverse("admin:alerts_alertdelivery_change", args=[delivery.pk])
    assert re.search(rf'<a class="alert-link" href="{event_url}">HighErrorRate firing since', body)
    assert f'<a class="alert-record" href="{delivery_url}">alert delivery {delivery.pk}' in body


def test_the_header_the_steps_and_the_timeline_agree_on_one_start_and_duration(operator_client, synced):
    run = finish(start("scan-and-notify", context={"target": "web-1"}))
    claimed = min(s.started_at for s in run.steps.all() if s.started_at)
    assert run.started_at is not None and run.finished_at is not None
    assert claimed <= run.started_at  # the transition to RUNNING is written after the first claim
    body = page(operator_client, run)
    duration = format_duration((run.finished_at - claimed).total_seconds())
    assert f'<dd class="run-duration">{duration}</dd>' in body
    assert f"· ran {duration}" in body  # the timeline's head
    started = timezone.localtime(claimed).strftime("%Y-%m-%d %H:%M:%S")
    assert f'<time datetime="{timezone.localtime(claimed).isoformat()}">{started}</time>' in body
    queued = format_duration((claimed - run.created_at).total_seconds())
    assert f'<dd class="run-queued">{queued}</dd>' in body
    scan = run.attempts.get(step__key="scan")
    assert scan.finished_at is not None
    ran = format_duration((scan.finished_at - scan.started_at).total_seconds())
    assert re.search(rf'<tr id="step-scan" data-step="scan">.*?<td class="step-ran">{re.escape(ran)}</td>', body)


def test_a_manually_retried_run_groups_its_attempts_by_round_and_draws_the_idle_gap(operator_client, make_run):
    run = make_run(status=RunStatus.FAILED, step_statuses={"doomed": StepStatus.FAILED}, age=timedelta(minutes=30))
    doomed = run.steps.get(key="doomed")
    failed_at = run.finished_at
    assert failed_at is not None
    retried = failed_at + timedelta(minutes=20)
    RunTransition.objects.create(run=run, from_status=RunStatus.RUNNING, to_status=RunStatus.FAILED, at=failed_at)
    RunTransition.objects.create(
        run=run, from_status=RunStatus.FAILED, to_status=RunStatus.RUNNING, at=retried, actor="olivia"
    )
    for number in (2, 3):
        start_at = retried + timedelta(seconds=number)
        AgentRun.objects.create(
            run=run,
            step=doomed,
            attempt=number,
            agent_type="fail",
            status="FAILED",
            started_at=start_at,
            finished_at=start_at + timedelta(milliseconds=30),
        )
    WorkflowRun.objects.filter(pk=run.pk).update(
        finished_at=retried + timedelta(seconds=4), error="step 'doomed' failed after 2 attempts: AgentError: boom"
    )
    body = page(operator_client, run)
    assert "Round 1 · from the trigger · 2 attempts" in body
    assert re.search(r"Round 2 · retried by olivia at [\d:]+, after 20m 0s idle · 2 attempts", body)
    assert "From round 2, after the retry by olivia" in body
    track = re.search(r'<div class="timeline-track" data-step="doomed".*?</div>', body, flags=re.S)
    assert track is not None
    drawn = re.findall(r'data-kind="(\w+)" data-round="(\d)"', track.group(0))
    rounds = [("queue", "1"), ("attempt", "1"), ("idle", "1")], [("queue", "2"), ("attempt", "2"), ("backoff", "2")]
    assert drawn == [*rounds[0], *rounds[1], ("attempt", "2")]
    assert '<span class="timeline-break"' in track.group(0)
    assert re.search(r'break-label" style="left:[\d.]+%">≈20m \ds</span>', body)


def test_breadcrumbs_use_djangos_markup_and_name_the_run(operator_client, make_run):
    run = make_run()
    body = page(operator_client, run)
    crumbs = re.search(r'<ol class="breadcrumbs">(.*?)</ol>', body, flags=re.S)
    assert crumbs is not None
    assert f'<li aria-current="page">test-failure run {str(run.pk)[:8]}</li>' in crumbs.group(1)
    assert 'class="breadcrumbs"' not in body.replace('<ol class="breadcrumbs">', "")
