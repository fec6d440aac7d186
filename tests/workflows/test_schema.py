"""One definition schema: the committed JSON Schema is what the code emits, and the bundled definitions pass it."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.core.management import CommandError, call_command
from pydantic import ValidationError

from workflows.management.commands import definition_schema
from workflows.models import WorkflowNode
from workflows.schema import SCHEMA_PATH, ApprovalDefinition, DefinitionFile, json_schema, json_schema_text

DEFINITIONS = Path("workflows/definitions")


def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_committed_json_schema_is_what_the_code_emits() -> None:
    assert (DEFINITIONS / "workflow.schema.json").resolve() == SCHEMA_PATH
    assert SCHEMA_PATH.read_text(encoding="utf-8") == json_schema_text(), "run `make schema`"
    out = StringIO()
    call_command("definition_schema", "--check", stdout=out)
    assert "is up to date" in out.getvalue()


def test_the_check_fails_on_a_stale_file_and_writing_brings_it_up_to_date(tmp_path, monkeypatch) -> None:
    stale = tmp_path / "workflow.schema.json"
    stale.write_text('{"type": "object"}\n')
    monkeypatch.setattr(definition_schema, "SCHEMA_PATH", stale)
    with pytest.raises(CommandError, match="is out of date: run `make schema`"):
        call_command("definition_schema", "--check", stdout=StringIO())
    call_command("definition_schema", stdout=StringIO())
    assert stale.read_text() == json_schema_text()


@pytest.mark.parametrize("path", sorted(DEFINITIONS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_definition_passes_the_json_schema(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# yaml-language-server: $schema=workflow.schema.json\n")
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator().iter_errors(yaml.safe_load(text))]
    assert errors == []


@pytest.mark.parametrize(
    "definition",
    [
        {"workflow": {"slug": "w", "nodes": [{"key": "a", "agent": "echo", "colour": "red"}]}},
        {"workflow": {"slug": "w", "nodes": [{"key": "a", "agent": "echo", "retry": {"max_attempts": 0}}]}},
        {"workflow": {"slug": "w", "nodes": [{"key": "a", "agent": "echo", "timeout_seconds": 0}]}},
        {"workflow": {"slug": "W", "nodes": [{"key": "a", "agent": "echo"}]}},
        {"workflow": {"slug": "w", "nodes": []}},
        {"workflow": {"slug": "w", "nodes": [{"key": "a", "agent": "echo", "approval": {"users": "alice"}}]}},
        {"workflow": {"slug": "w", "nodes": [{"key": "a", "agent": "echo", "approval": {"timeout_action": "x"}}]}},
        {"agents": [{"slug": "t", "type": "teleporter"}]},
        {"workflows": "w"},
    ],
    ids=[
        "unknown-field",
        "no-attempts",
        "zero-timeout",
        "uppercase-slug",
        "no-nodes",
        "users-not-a-list",
        "timeout-action",
        "agent-type",
        "workflows-not-a-list",
    ],
)
def test_the_json_schema_refuses_what_the_loader_refuses(definition: dict) -> None:
    with pytest.raises(ValidationError):
        DefinitionFile.model_validate(definition)
    assert list(validator().iter_errors(definition)) != []


def test_the_timeout_actions_are_the_models_choices() -> None:
    field = ApprovalDefinition.model_json_schema()["properties"]["timeout_action"]
    assert sorted(field["enum"]) == sorted(WorkflowNode.ApprovalTimeoutAction.values)
