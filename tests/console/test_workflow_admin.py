"""Workflows in the admin: nodes edited inline with the DAG checked on save; "Trigger now"."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from tests.console.forms import change_page_data
from workflows.models import Workflow, WorkflowRun


@pytest.fixture
def workflow(synced) -> Workflow:
    return Workflow.objects.get(slug="scan-approve-notify")


def change_url(workflow: Workflow) -> str:
    return reverse("admin:workflows_workflow_change", args=[workflow.pk])


def edit(client, workflow: Workflow, **node_changes: dict[str, str]):
    """Posts the change form with some node fields replaced: edit(client, wf, summarise={"depends_on": ...})."""
    data = change_page_data(client.get(change_url(workflow)))
    keys = {data[f"nodes-{i}-key"]: i for i in range(int(data["nodes-TOTAL_FORMS"]))}
    for key, fields in node_changes.items():
        for name, value in fields.items():
            data[f"nodes-{keys[key]}-{name}"] = value
    return client.post(change_url(workflow), data)


def errors(response) -> str:
    return " ".join(
        str(e) for formset in response.context["inline_admin_formsets"] for e in formset.formset.non_form_errors()
    )


def test_a_dependency_on_a_missing_node_is_refused_naming_the_node(admin_client, workflow):
    response = edit(admin_client, workflow, summarise={"depends_on": '["scan", "ghost"]'})
    assert response.status_code == 200
    assert "node 'summarise': depends on missing node 'ghost'" in errors(response)
    assert workflow.nodes.get(key="summarise").depends_on == ["scan"]


def test_a_cycle_is_refused(admin_client, workflow):
    response = edit(admin_client, workflow, scan={"depends_on": '["notify"]'})
    assert "dependency cycle" in errors(response)
    assert workflow.nodes.get(key="scan").depends_on == []


def test_a_reference_to_a_step_that_is_not_upstream_is_refused(admin_client, workflow):
    response = edit(admin_client, workflow, scan={"inputs": json.dumps({"x": "{{ steps.notify.output.y }}"})})
    assert "node 'scan': reference 'steps.notify.output.y' names step 'notify'" in errors(response)


def test_a_valid_edit_is_saved_and_bumps_the_version(admin_client, workflow):
    response = edit(admin_client, workflow, notify={"max_attempts": "5"})
    assert response.status_code == 302, errors(response)
    workflow.refresh_from_db()
    assert workflow.nodes.get(key="notify").max_attempts == 5
    assert workflow.version == 2


def test_saving_without_changes_keeps_the_version(admin_client, workflow):
    assert edit(admin_client, workflow).status_code == 302
    workflow.refresh_from_db()
    assert workflow.version == 1


def trigger_url(workflow: Workflow) -> str:
    return reverse("admin:workflows_workflow_trigger", args=[workflow.pk])


def test_trigger_now_starts_a_run_with_the_context(operator_client, workflow):
    response = operator_client.post(trigger_url(workflow), {"context": '{"target": "web-9"}'})
    run = WorkflowRun.objects.get()
    assert response["Location"] == reverse("admin:workflows_workflowrun_change", args=[run.pk])
    assert run.triggered_by is not None
    assert (run.trigger, run.context, run.triggered_by.username) == ("admin", {"target": "web-9"}, "olivia")


@pytest.mark.parametrize(
    ("context", "error"),
    [
        ("[1, 2]", "The context must be a JSON object, not list."),
        ('"text"', "The context must be a JSON object, not str."),
        ("{oops", "Not valid JSON: Expecting property name enclosed in double quotes (line 1, column 2)."),
    ],
)
def test_trigger_now_refuses_a_context_that_is_not_a_json_object(operator_client, workflow, context, error):
    response = operator_client.post(trigger_url(workflow), {"context": context})
    assert response.status_code == 200
    assert response.context["form"].errors["context"] == [error]
    assert not WorkflowRun.objects.exists()


@pytest.mark.parametrize(
    ("context", "error"),
    [
        ('{"threshold": NaN}', "context.threshold: non-finite number (NaN) not allowed"),
        ('{"limits": [1, -Infinity]}', "context.limits[1]: non-finite number (-Infinity) not allowed"),
        ('{"host": {"name": "web\\u00003"}}', "context.host.name: NUL character not allowed"),
        ('{"a\\u0000b": 1}', 'context: NUL character not allowed in key "a\\u0000b"'),
    ],
)
def test_trigger_now_refuses_a_context_the_database_cannot_store_naming_where(
    operator_client, workflow, context, error
):
    response = operator_client.post(trigger_url(workflow), {"context": context})
    assert response.status_code == 200
    assert response.context["form"].errors["context"] == [f"The context cannot be stored: {error}."]
    assert not WorkflowRun.objects.exists()


def test_trigger_now_is_for_operators_only(viewer_client, operator_client, workflow):
    assert viewer_client.get(trigger_url(workflow)).status_code == 403
    assert viewer_client.post(trigger_url(workflow), {"context": "{}"}).status_code == 403
    assert not WorkflowRun.objects.exists()
    assert operator_client.get(trigger_url(workflow)).status_code == 200


def test_the_workflow_page_offers_trigger_now(admin_client, workflow):
    assert trigger_url(workflow) in admin_client.get(change_url(workflow)).content.decode()
