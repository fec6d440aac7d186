"""Cancel, retry and re-run from the run page and the run list: permission-checked, CSRF-protected."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from workflows.models import RunStatus, StepStatus, WorkflowRun

LIST = reverse("admin:workflows_workflowrun_changelist")


def act(run: WorkflowRun, action: str) -> str:
    return reverse("admin:workflows_workflowrun_act", args=[run.pk, action])


def page(run: WorkflowRun) -> str:
    return reverse("admin:workflows_workflowrun_change", args=[run.pk])


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def failed_run(make_run) -> WorkflowRun:
    return make_run(status=RunStatus.FAILED, step_statuses={"doomed": StepStatus.FAILED})


def test_an_operator_cancels_a_running_run_from_its_page(operator_client, make_run):
    run = make_run(status=RunStatus.RUNNING, step_statuses={"doomed": StepStatus.RUNNING})
    response = operator_client.post(act(run, "cancel"), follow=True)
    assert response.redirect_chain[-1][0] == page(run)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert run.transitions.last().actor == "olivia"
    assert messages_of(response) == [f"Cancelled run {run.pk}."]


def test_an_operator_retries_the_failed_steps(operator_client, make_run):
    run = failed_run(make_run)
    operator_client.post(act(run, "retry"))
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    assert run.steps.get(key="doomed").status in (StepStatus.PENDING, StepStatus.READY)
    assert run.steps.get(key="prepare").status == StepStatus.SUCCESS


def test_a_rerun_is_a_new_run_with_the_same_context_linked_to_the_original(operator_client, make_run):
    run = make_run(status=RunStatus.SUCCESS, context={"note": "again"})
    response = operator_client.post(act(run, "rerun"))
    new = WorkflowRun.objects.get(rerun_of=run)
    assert response["Location"] == page(new)
    assert new.triggered_by is not None
    assert (new.context, new.trigger, new.triggered_by.username) == ({"note": "again"}, "rerun", "olivia")


def test_domain_errors_become_admin_messages(operator_client, make_run):
    run = make_run(status=RunStatus.SUCCESS)
    response = operator_client.post(act(run, "cancel"), follow=True)
    assert messages_of(response) == [f"Could not cancel run {run.pk}: run cannot move from SUCCESS to CANCELLED."]
    response = operator_client.post(act(run, "retry"), follow=True)
    assert messages_of(response) == [f"Could not retry run {run.pk}: run cannot move from SUCCESS to RUNNING."]
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS


def test_the_page_offers_only_the_actions_the_run_allows(operator_client, make_run):
    body = operator_client.get(page(failed_run(make_run))).content.decode()
    assert 'value="Retry failed steps"' in body and 'value="Re-run with same context"' in body
    assert 'value="Cancel run"' not in body
    body = operator_client.get(page(make_run(status=RunStatus.RUNNING))).content.decode()
    assert 'value="Cancel run"' in body and 'value="Retry failed steps"' not in body


def test_a_viewer_sees_no_actions_and_cannot_post_them(viewer_client, make_run):
    run = failed_run(make_run)
    body = viewer_client.get(page(run)).content.decode()
    assert "run-actions" not in body and "Retry failed steps" not in body
    assert viewer_client.post(act(run, "retry")).status_code == 403
    assert viewer_client.post(act(run, "rerun")).status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and not WorkflowRun.objects.filter(rerun_of=run).exists()


def test_actions_refuse_get_and_unknown_names(operator_client, make_run):
    run = failed_run(make_run)
    assert operator_client.get(act(run, "retry")).status_code == 405
    assert operator_client.post(act(run, "explode")).status_code == 404


def test_a_post_without_the_csrf_token_is_refused(run_operator, make_run):
    run = make_run(status=RunStatus.RUNNING)
    client = Client(enforce_csrf_checks=True)
    client.force_login(run_operator)
    assert client.post(act(run, "cancel")).status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    client.get(page(run))  # sets the CSRF cookie, as the browser would
    token = client.cookies["csrftoken"].value
    assert client.post(act(run, "cancel"), {"csrfmiddlewaretoken": token}).status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


@pytest.mark.parametrize(
    ("action", "status", "expected"),
    [("cancel_runs", RunStatus.RUNNING, RunStatus.CANCELLED), ("retry_runs", RunStatus.FAILED, RunStatus.RUNNING)],
)
def test_list_actions_act_on_the_selected_runs(operator_client, make_run, action, status, expected):
    runs = [make_run(status=status, step_statuses={"doomed": StepStatus.FAILED}) for _ in range(2)]
    untouched = make_run(status=status, step_statuses={"doomed": StepStatus.FAILED})
    operator_client.post(LIST, {"action": action, "_selected_action": [str(r.pk) for r in runs]})
    assert [WorkflowRun.objects.get(pk=r.pk).status for r in runs] == [expected, expected]
    assert WorkflowRun.objects.get(pk=untouched.pk).status == status


def test_the_rerun_list_action_starts_one_new_run_per_selected_run(operator_client, make_run):
    runs = [make_run(status=RunStatus.SUCCESS) for _ in range(2)]
    response = operator_client.post(
        LIST, {"action": "rerun_runs", "_selected_action": [str(r.pk) for r in runs]}, follow=True
    )
    assert WorkflowRun.objects.filter(rerun_of__in=runs).count() == 2
    assert len(messages_of(response)) == 2


def test_a_viewer_cannot_run_list_actions(viewer_client, make_run):
    run = make_run(status=RunStatus.RUNNING)
    assert viewer_client.get(LIST).context["action_form"] is None
    viewer_client.post(LIST, {"action": "cancel_runs", "_selected_action": [str(run.pk)]})
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
