"""The run history: what each row shows, filters, search, order, and a query count that does not grow."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from workflows.models import RunStatus, StepStatus, WorkflowRun

LIST = reverse("admin:workflows_workflowrun_changelist")


def row_ids(response) -> list[str]:
    return [str(run.pk) for run in response.context["cl"].result_list]


def test_each_row_shows_status_workflow_trigger_duration_progress_and_trace(operator_client, make_run, settings):
    settings.GRAFANA_URL = "https://grafana.example.test"
    run = make_run(status=RunStatus.FAILED, step_statuses={"doomed": StepStatus.FAILED})
    body = operator_client.get(LIST).content.decode()
    assert 'class="run-status run-status-failed" data-status="FAILED">Failed<' in body
    assert "test-failure" in body
    assert "1/2" in body  # prepare succeeded, doomed failed
    assert "3.0 s" in body
    assert f"{run.trace_id[:8]}…" in body
    assert "https://grafana.example.test/explore?" in body
    assert f'class="action-select" aria-label="Select test-failure run {str(run.pk)[:8]}">' in body


def test_without_grafana_the_trace_column_shows_the_id_without_a_link(operator_client, make_run, settings):
    settings.GRAFANA_URL = ""
    run = make_run()
    body = operator_client.get(LIST).content.decode()
    assert run.trace_id[:8] in body
    assert "/explore?" not in body


def test_newest_runs_come_first(operator_client, make_run):
    old = make_run(age=timedelta(days=2))
    new = make_run(age=timedelta(minutes=1))
    assert row_ids(operator_client.get(LIST)) == [str(new.pk), str(old.pk)]


def test_filters_by_status_workflow_trigger_and_date(operator_client, make_run):
    failed = make_run(status=RunStatus.FAILED, step_statuses={"doomed": StepStatus.FAILED})
    ok = make_run("scan-and-notify", status=RunStatus.SUCCESS, trigger="alert")
    old = make_run(status=RunStatus.SUCCESS, trigger="admin", age=timedelta(days=40))
    assert row_ids(operator_client.get(LIST, {"status__exact": "FAILED"})) == [str(failed.pk)]
    workflow_id = ok.workflow_id
    assert row_ids(operator_client.get(LIST, {"workflow__id__exact": workflow_id})) == [str(ok.pk)]
    assert row_ids(operator_client.get(LIST, {"trigger__exact": "alert"})) == [str(ok.pk)]
    since = (timezone.now() - timedelta(days=7)).date().isoformat()
    recent = row_ids(operator_client.get(LIST, {"created_at__gte": since}))
    assert str(old.pk) not in recent and len(recent) == 2


@pytest.mark.parametrize(
    "how",
    [
        "run id",
        "run id prefix",
        "run id prefix with dashes",
        "trace id",
        "trace id prefix",
        "trace id as listed",
        "context text",
    ],
)
def test_search_finds_a_run_by_id_trace_id_or_context(operator_client, make_run, how):
    wanted = make_run(context={"target": "db-primary-7"})
    make_run(context={"target": "web-1"})
    term = {
        "run id": str(wanted.pk),
        "run id prefix": str(wanted.pk)[:8],
        "run id prefix with dashes": str(wanted.pk)[:13],
        "trace id": wanted.trace_id,
        "trace id prefix": wanted.trace_id[:8],
        "trace id as listed": f"{wanted.trace_id[:8]}…",  # copied from the Trace column
        "context text": "primary-7",
    }[how]
    assert row_ids(operator_client.get(LIST, {"q": term})) == [str(wanted.pk)]


def test_a_failed_run_shows_its_error_and_red_for_its_failed_steps(operator_client, make_run):
    failed = make_run(status=RunStatus.FAILED, step_statuses={"doomed": StepStatus.FAILED})
    failed.error = "step 'doomed' failed after 3 attempts: AgentError: " + "x" * 400
    failed.save(update_fields=["error"])
    body = operator_client.get(LIST).content.decode()
    excerpt = re.search(r'<span class="run-error-excerpt run-error-failed" title="([^"]*)">', body)
    assert excerpt is not None
    assert excerpt.group(1).startswith("step &#x27;doomed&#x27; failed after 3 attempts")
    assert len(excerpt.group(1).replace("&#x27;", "'")) == 160  # an excerpt, not the whole error
    assert '<span class="done" style="width:50.0%"></span><span class="failed" style="width:50.0%"></span>' in body
    assert "1 of 2 steps succeeded, 1 failed" in body


def test_filters_and_columns_use_words_not_enum_names(operator_client, make_run):
    make_run(status=RunStatus.WAITING_APPROVAL, trigger="api")
    body = operator_client.get(LIST).content.decode()
    filters = body[body.index('id="changelist-filter"') :]
    for label in ("Waiting for approval", "Succeeded", "API", "Console", "Re-run"):
        assert f">{label}</a>" in filters
    assert "WAITING_APPROVAL</a>" not in filters and ">Api</a>" not in filters
    assert ">Waiting for approval</span>" in body
    waiting = operator_client.get(LIST, {"status__exact": "WAITING_APPROVAL", "trigger__exact": "api"})
    assert len(row_ids(waiting)) == 1


def test_the_duration_counts_from_the_first_claim(operator_client, make_run):
    run = make_run(status=RunStatus.SUCCESS)
    first = run.steps.order_by("started_at").first()
    assert first is not None and first.started_at is not None and run.finished_at is not None
    # Recorded by the transition to RUNNING a little after a worker claimed the first step, as the runner does.
    WorkflowRun.objects.filter(pk=run.pk).update(started_at=first.started_at + timedelta(milliseconds=500))
    body = operator_client.get(LIST).content.decode()
    expected = (run.finished_at - first.started_at).total_seconds()
    assert f"{expected:.1f} s" in body


def test_hex_that_is_no_runs_id_is_looked_for_in_the_contexts(operator_client, make_run):
    wanted = make_run(context={"commit": "0123456789abcdef"})
    make_run(context={"commit": "fedcba9876543210"})
    assert row_ids(operator_client.get(LIST, {"q": "0123456789ab"})) == [str(wanted.pk)]


def test_the_context_search_can_use_the_trigram_index(operator_client, make_run):
    """The expression the search filters on is the one workflows/migrations/0005 indexes: with 100,000 runs the
    planner takes the index instead of scanning every context (here the planner is told not to scan, whatever
    the statistics of this small table say)."""
    make_run(context={"target": "db-primary-7"})
    response = operator_client.get(LIST, {"q": "primary-7"})
    queryset = response.context["cl"].queryset
    with connection.cursor() as cursor:
        # Left only bitmap scans, which need an index that can answer the condition itself.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        plan = queryset.order_by().explain()
    assert "run_context_search_idx" in plan
