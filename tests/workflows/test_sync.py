"""`manage.py sync_workflows`: idempotent loading and errors that name the file and node."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from workflows.models import Workflow

pytestmark = pytest.mark.django_db

AGENTS = """
agents:
  - {slug: a-echo, type: echo}
"""


def sync(path: Path) -> str:
    out = StringIO()
    call_command("sync_workflows", str(path), stdout=out)
    return out.getvalue()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_bundled_definitions_sync_and_a_second_sync_changes_nothing() -> None:
    first = sync(Path("workflows/definitions"))
    assert "created: workflow scan-and-notify" in first and "created: workflow test-failure" in first
    versions = dict(Workflow.objects.values_list("slug", "version"))
    second = sync(Path("workflows/definitions"))
    assert "0 created, 0 updated" in second
    assert dict(Workflow.objects.values_list("slug", "version")) == versions


def test_a_changed_definition_bumps_the_version(tmp_path: Path) -> None:
    write(tmp_path, "agents.yaml", AGENTS)
    wf = write(tmp_path, "wf.yaml", "workflow:\n  slug: w\n  name: W\n  nodes:\n    - {key: a, agent: a-echo}\n")
    sync(tmp_path)
    wf.write_text("workflow:\n  slug: w\n  name: W\n  nodes:\n    - {key: a, agent: a-echo, inputs: {x: 1}}\n")
    assert "updated: workflow w (version 2)" in sync(tmp_path)
    assert Workflow.objects.get(slug="w").nodes.get().inputs == {"x": 1}


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (
            "    - {key: a, agent: a-echo, depends_on: [b]}\n    - {key: b, agent: a-echo, depends_on: [a]}\n",
            "workflow 'w': dependency cycle a -> b -> a",
        ),
        ("    - {key: a, agent: ghost}\n", "workflow 'w': node 'a': unknown agent 'ghost'"),
        ("    - {key: a, agent: a-echo, depends_on: [zz]}\n", "workflow 'w': node 'a': depends on missing node 'zz'"),
        ("    - {key: a, agent: a-echo}\n    - {key: a, agent: a-echo}\n", "node 'a' is defined twice"),
        (
            "    - {key: a, agent: a-echo, inputs: {x: '{{ steps.b.output.y }}'}}\n    - {key: b, agent: a-echo}\n",
            "node 'a': reference 'steps.b.output.y' names step 'b', which is not upstream of this node",
        ),
        ("    - {key: a, agent: a-echo, retry: {max_attempts: 0}}\n", "node 'a' retry.max_attempts: 0 is below"),
        ("    - {key: a, agent: a-echo, colour: red}\n", "node 'a': unknown field(s) colour"),
        (
            "    - {key: a, agent: a-echo, approval: {required: true, users: [alice], required_approvals: 2}}\n",
            "node 'a' approval.required_approvals: 2 approvals needed but only 1 user(s) may decide (alice) "
            "and no groups are listed, so the gate could never be approved",
        ),
        (
            "    - {key: a, agent: a-echo, approval: {required: true, users: [bo, al, bo], required_approvals: 3}}\n",
            "node 'a' approval.required_approvals: 3 approvals needed but only 2 user(s) may decide (al, bo)",
        ),
        ("    - {key: a, agent: a-echo, approval: {required: true, users: alice}}\n", "approval.users: must be a list"),
        ("    - {key: a, agent: a-echo, approval: {groups: [ops, 7]}}\n", "node 'a' approval.groups: must be a list"),
    ],
)
def test_invalid_definitions_are_refused_naming_file_and_node(tmp_path: Path, nodes: str, message: str) -> None:
    write(tmp_path, "agents.yaml", AGENTS)
    path = write(tmp_path, "bad.yaml", "workflow:\n  slug: w\n  name: W\n  nodes:\n" + nodes)
    with pytest.raises(CommandError) as exc:
        sync(tmp_path)
    assert str(path) in str(exc.value)
    assert message in str(exc.value)
    assert not Workflow.objects.filter(slug="w").exists()


@pytest.mark.parametrize(
    "approval",
    [
        "{required: true, users: [alice, bob], required_approvals: 2}",
        "{required: true, users: [alice], groups: [ops], required_approvals: 3}",
        "{required: true, required_approvals: 5}",
        "{required: false, users: [alice], required_approvals: 2}",
    ],
    ids=["enough-users", "groups-too", "everyone-with-the-permission", "gate-off"],
)
def test_a_quorum_that_can_be_reached_syncs(tmp_path: Path, approval: str) -> None:
    write(tmp_path, "agents.yaml", AGENTS)
    write(
        tmp_path, "ok.yaml", f"workflow:\n  slug: w\n  nodes:\n    - {{key: a, agent: a-echo, approval: {approval}}}\n"
    )
    sync(tmp_path)
    assert Workflow.objects.get(slug="w").nodes.get().required_approvals >= 2


def test_a_bad_file_leaves_the_database_untouched(tmp_path: Path) -> None:
    write(tmp_path, "agents.yaml", AGENTS)
    write(tmp_path, "good.yaml", "workflow:\n  slug: good\n  nodes:\n    - {key: a, agent: a-echo}\n")
    write(tmp_path, "worse.yaml", "workflow:\n  slug: worse\n  nodes:\n    - {key: a, agent: nobody}\n")
    with pytest.raises(CommandError, match="unknown agent 'nobody'"):
        sync(tmp_path)
    assert not Workflow.objects.exists()


def test_invalid_yaml_and_agent_config_are_reported(tmp_path: Path) -> None:
    write(tmp_path, "broken.yaml", "workflow: [unclosed\n")
    with pytest.raises(CommandError, match="broken.yaml: not valid YAML"):
        sync(tmp_path)
    (tmp_path / "broken.yaml").unlink()
    write(tmp_path, "agents.yaml", "agents:\n  - {slug: c, type: command, config: {command: [rm, -rf, /]}}\n")
    with pytest.raises(CommandError, match="agent 'c': config command: 'rm' is not in COMMAND_AGENT_ALLOWLIST"):
        sync(tmp_path)
    write(tmp_path, "agents.yaml", "agents:\n  - {slug: c, type: teleporter}\n")
    with pytest.raises(CommandError, match="agent 'c': unknown type 'teleporter'"):
        sync(tmp_path)


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no such file or directory"):
        sync(tmp_path / "nope")
