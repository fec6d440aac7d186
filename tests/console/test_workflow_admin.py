"""Workflows in the admin: nodes edited inline with the DAG checked on save; "Trigger now"."""

from __future__ import annotations

import json

import pytest
import yaml
from django.core.management import CommandError, call_command
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


# The admin form and the loader validate through one schema (workflows.schema): what one refuses the other
# refuses, with the same messages. Each case edits one node in the form and the same node in a YAML file.
SAME_AS_THE_LOADER = [
    (
        "notify",
        {"approver_users": '["alice"]', "required_approvals": "2"},
        {"approval": {"users": ["alice"], "required_approvals": 2}},
        "node 'notify' approval.required_approvals: 2 approvals needed but only 1 user(s) may decide (alice) "
        "and no groups are listed, so the gate could never be approved",
    ),
    ("scan", {"max_attempts": "0"}, {"retry": {"max_attempts": 0}}, "node 'scan' retry.max_attempts: 0 is below"),
    ("scan", {"backoff_seconds": "-1"}, {"retry": {"backoff_seconds": -1}}, "retry.backoff_seconds: -1"),
    ("scan", {"backoff_jitter": "-0.5"}, {"retry": {"jitter": -0.5}}, "node 'scan' retry.jitter: -0.5 is below"),
    ("scan", {"timeout_seconds": "0"}, {"timeout_seconds": 0}, "node 'scan' timeout_seconds: 0"),
    (
        "notify",
        {"approval_timeout_seconds": "0.5"},
        {"approval": {"timeout_seconds": 0.5}},
        "approval.timeout_seconds: 0.5 is below the minimum of 1",
    ),
    ("notify", {"approver_groups": '["ops", 7]'}, {"approval": {"groups": ["ops", 7]}}, "must be a list of names"),
    ("summarise", {"depends_on": '["ghost"]'}, {"depends_on": ["ghost"]}, "depends on missing node 'ghost'"),
    ("scan", {"depends_on": '["notify"]'}, {"depends_on": ["notify"]}, "dependency cycle"),
    (
        "scan",
        {"inputs": '{"x": "{{ steps.notify.output.y }}"}'},
        {"inputs": {"x": "{{ steps.notify.output.y }}"}},
        "not upstream",
    ),
]
SAME_IDS = [
    "quorum",
    "no-attempts",
    "negative-backoff",
    "negative-jitter",
    "zero-timeout",
    "short-approval-timeout",
    "group-names",
    "missing-dependency",
    "cycle",
    "reference",
]


def loader_messages(workflow: Workflow, tmp_path, key: str, change: dict) -> list[str]:
    """What sync_workflows says of the workflow as stored with ``change`` applied to node ``key``."""
    nodes = []
    for node in workflow.snapshot()["nodes"]:
        node.pop("agent_type")
        if node["key"] == key:
            for name, value in change.items():
                node[name] = {**node[name], **value} if isinstance(value, dict) else value
        nodes.append(node)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump({"workflow": {"slug": workflow.slug, "name": workflow.name, "nodes": nodes}}))
    with pytest.raises(CommandError) as exc:
        call_command("sync_workflows", str(path), verbosity=0)
    lines = str(exc.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    return [line.removeprefix(f"{path}: ") for line in lines]


@pytest.mark.parametrize(("key", "form_change", "yaml_change", "message"), SAME_AS_THE_LOADER, ids=SAME_IDS)
def test_the_form_refuses_what_the_loader_refuses_with_the_same_messages(
    admin_client, workflow, tmp_path, key, form_change, yaml_change, message
):
    before = workflow.snapshot()
    expected = loader_messages(workflow, tmp_path, key, yaml_change)
    response = edit(admin_client, workflow, **{key: form_change})
    assert response.status_code == 200
    shown = [str(e) for f in response.context["inline_admin_formsets"] for e in f.formset.non_form_errors()]
    assert shown == expected
    assert any(message in line for line in shown)
    assert shown[0].startswith(f"workflow '{workflow.slug}': ")
    assert workflow.snapshot() == before
