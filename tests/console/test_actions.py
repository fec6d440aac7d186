"""Cancel, retry and re-run from the run page and the run list: permission-checked, CSRF-protected."""

from __future__ import annotations

import re

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
    assert "Cancel run…" not in body
    running = make_run(status=RunStatus.RUNNING)
    body = operator_client.get(page(running)).content.decode()
    assert f'<a class="button danger cancel-link" href="{act(running, "cancel")}">Cancel run…</a>' in body
    assert 'value="Retry failed steps"' not in body


def test_cancel_on_the_run_page_first_says_what_it_will_do(operator_client, make_run, synced, viewer):
    run = make_run(
        status=RunStatus.RUNNING, step_statuses={"prepare": StepStatus.RUNNING, "doomed": StepStatus.PENDING}
    )
    response = operator_client.get(act(run, "cancel"))
    assert response.status_code == 200
    body = " ".join(response.content.decode().split())
    assert "<h1>Cancel 1 run?</h1>" in body
    assert "2 open steps will be cancelled, and the 1 attempt running now will be stopped at its next lease" in body
    assert f'<form method="post" action="{act(run, "cancel")}">' in body
    assert ">Yes, cancel 1 run</button>" in body and f'href="{page(run)}" class="button cancel-link"' in body
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING  # asking did nothing
    operator_client.post(act(run, "cancel"))
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


def test_a_viewer_sees_no_actions_and_cannot_post_them(viewer_client, make_run):
    run = failed_run(make_run)
    body = viewer_client.get(page(run)).content.decode()
    assert "run-actions" not in body and "Retry failed steps" not in body
    assert viewer_client.post(act(run, "retry")).status_code == 403
    assert viewer_client.post(act(run, "rerun")).status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and not WorkflowRun.objects.filter(rerun_of=run).exists()


def test_actions_refuse_get_and_unknown_names(operator_client, viewer_client, make_run):
    run = failed_run(make_run)
    assert operator_client.get(act(run, "retry")).status_code == 405
    assert operator_client.post(act(run, "explode")).status_code == 404
    assert viewer_client.get(act(run, "cancel")).status_code == 403


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


def test_retry_from_the_list_acts_on_the_selected_runs(operator_client, make_run):
    runs = [failed_run(make_run) for _ in range(2)]
    untouched = failed_run(make_run)
    operator_client.post(LIST, {"action": "retry_runs", "_selected_action": [str(r.pk) for r in runs]})
    assert [WorkflowRun.objects.get(pk=r.pk).status for r in runs] == [RunStatus.RUNNING, RunStatus.RUNNING]
    assert WorkflowRun.objects.get(pk=untouched.pk).status == RunStatus.FAILED


def test_cancelling_selected_runs_asks_first_with_what_happens_to_how_many(operator_client, make_run):
    runs = [make_run(status=RunStatus.RUNNING, step_statuses={"doomed": StepStatus.RUNNING}) for _ in range(2)]
    done = make_run(status=RunStatus.SUCCESS)
    untouched = make_run(status=RunStatus.RUNNING)
    selected = [str(r.pk) for r in [*runs, done]]
    response = operator_client.post(LIST, {"action": "cancel_runs", "_selected_action": selected})
    body = " ".join(response.content.decode().split())
    assert response.status_code == 200 and "<h1>Cancel 2 runs?</h1>" in body
    assert "these 2 runs stops them for good: 2 open steps will be cancelled" in body
    assert "1 selected run has already finished and is left alone" in body
    assert ">Yes, cancel 2 runs</button>" in body
    assert [WorkflowRun.objects.get(pk=r.pk).status for r in runs] == [RunStatus.RUNNING, RunStatus.RUNNING]
    confirmed = re.findall(r'name="_selected_action" value="([^"]+)"', body)
    assert sorted(confirmed) == sorted(str(r.pk) for r in runs)  # the finished run is not carried on
    response = operator_client.post(
        LIST, {"action": "cancel_runs", "post": "yes", "_selected_action": confirmed}, follow=True
    )
    assert sorted(messages_of(response)) == sorted(f"Cancelled run {r.pk}." for r in runs)
    assert [WorkflowRun.objects.get(pk=r.pk).status for r in runs] == [RunStatus.CANCELLED, RunStatus.CANCELLED]
    assert WorkflowRun.objects.get(pk=untouched.pk).status == RunStatus.RUNNING


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
