"""The run history: what each row shows, filters, search, order, and a query count that does not grow."""

from __future__ import annotations

from datetime import timedelta

import pytest
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
    assert 'class="run-status run-status-failed"' in body
    assert "test-failure" in body
    assert "1/2" in body  # prepare succeeded, doomed failed
    assert "3.0 s" in body
    assert f"{run.trace_id[:8]}…" in body
    assert "https://grafana.example.test/explore?" in body


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


@pytest.mark.parametrize("how", ["run id", "run id prefix", "trace id", "context text"])
def test_search_finds_a_run_by_id_trace_id_or_context(operator_client, make_run, how):
    wanted = make_run(context={"target": "db-primary-7"})
    make_run(context={"target": "web-1"})
    term = {
        "run id": str(wanted.pk),
        "run id prefix": str(wanted.pk)[:8],
        "trace id": wanted.trace_id,
        "context text": "primary-7",
    }[how]
    assert row_ids(operator_client.get(LIST, {"q": term})) == [str(wanted.pk)]


def test_the_query_count_per_page_does_not_grow_with_the_runs(operator_client, make_run, django_assert_max_num_queries):
    make_run()
    operator_client.get(LIST)  # warm the session and content type caches
    with django_assert_max_num_queries(12) as few:
        assert len(row_ids(operator_client.get(LIST))) == 1
    for _ in range(59):
        make_run(status=RunStatus.SUCCESS)
    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        response = operator_client.get(LIST)
    assert len(row_ids(response)) == 50  # a full page
    assert len(many.captured_queries) == len(few.captured_queries)
    assert WorkflowRun.objects.count() == 60
