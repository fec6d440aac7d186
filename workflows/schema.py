"""The one schema of a definition file: the YAML loader and the admin's workflow form both validate through it.

``DefinitionFile`` describes a file under ``workflows/definitions/`` (``agents:``, ``workflow:``, ``workflows:``);
``WorkflowDefinition`` one workflow, ``NodeDefinition`` one step. Every rule lives here: slugs, unknown fields,
types, retry and timeout bounds, the approval gate (a quorum that can never be reached), agent types and their
config, and the graph (duplicate keys, unknown agents, missing dependencies, cycles, template references that
do not name an upstream step). The graph needs to know which agents exist: pass them as the validation
context ``{"known_agents": {...}}``; without it the agent check alone is skipped (the JSON Schema cannot know
the database either).

``problems`` turns a ``pydantic.ValidationError`` into messages that name the workflow, the node and the field
(``workflow 'w': node 'a' retry.max_attempts: 0 is below the minimum of 1``), the same wherever the definition
came from. ``json_schema_text`` is what ``manage.py definition_schema`` (``make schema``) writes to
``workflows/definitions/workflow.schema.json`` for editors; a test keeps the committed file equal to it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from agents.executors import EXECUTORS, executor_class
from workflows.templating import TemplateError, references

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
SCHEMA_PATH = Path(__file__).resolve().parent / "definitions" / "workflow.schema.json"

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]


def _names(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise PydanticCustomError("names", "must be a list of names")
    return value


Names = Annotated[list[Annotated[str, StringConstraints(min_length=1)]] | None, BeforeValidator(_names)]


class _Strict(BaseModel):
    # Strict: no "3" for 3 and no true for 1, as the loader never accepted them; unknown fields are errors.
    model_config = ConfigDict(extra="forbid", strict=True)


class RetryDefinition(_Strict):
    """Attempt n (n >= 2) waits min(backoff_seconds * 2**(n-2), backoff_max_seconds) seconds, +/- jitter."""

    max_attempts: int = Field(default=1, ge=1, description="Attempts in all, the first included.")
    backoff_seconds: float = Field(default=1.0, ge=0, description="The wait before the second attempt.")
    backoff_max_seconds: float = Field(default=300.0, ge=0, description="The longest wait between attempts.")
    jitter: float = Field(default=0.1, ge=0, description="Fraction of the wait added or removed at random.")


class ApprovalDefinition(_Strict):
    """An approval gate: the step waits until enough people allowed to decide approve it."""

    required: bool = Field(default=False, description="Whether the step waits for approval.")
    groups: Names = Field(default=None, description="Groups whose members may decide; none means anyone allowed.")
    users: Names = Field(default=None, description="Usernames who may decide; none means anyone allowed.")
    required_approvals: int = Field(default=1, ge=1, description="Approvals from distinct people needed to go on.")
    timeout_seconds: float | None = Field(default=None, ge=1, description="How long the gate waits; none: forever.")
    timeout_action: Literal["reject", "approve"] = Field(default="reject", description="What a timeout decides.")
    allow_self_approval: bool = Field(default=False, description="Whether whoever triggered the run may approve it.")

    @field_validator("required_approvals")
    @classmethod
    def _quorum_can_be_reached(cls, required_approvals: int, info: ValidationInfo) -> int:
        groups, users = info.data.get("groups") or [], set(info.data.get("users") or [])
        if info.data.get("required") and users and not groups and required_approvals > len(users):
            # Listed users without groups are the only ones who may decide, each counting once toward the quorum.
            raise PydanticCustomError(
                "quorum",
                "{message}",
                {
                    "message": f"{required_approvals} approvals needed but only {len(users)} user(s) may decide "
                    f"({', '.join(sorted(users))}) and no groups are listed, so the gate could never be approved"
                },
            )
        return required_approvals


class NodeDefinition(_Strict):
    """One step: which agent runs, with what inputs, after which steps, and its policies."""

    key: Slug = Field(description="The step's key, unique in the workflow; other steps name it.")
    name: str = Field(default="", description="What the console calls the step; the key when empty.")
    agent: str = Field(description="The slug of the agent that runs the step.")
    action: str = Field(default="", description="Passed to the agent.")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="The step's inputs; strings may reference {{ context.x }}, {{ steps.k.output.y }}, {{ run.id }}.",
    )
    depends_on: list[str] | None = Field(default=None, description="Keys of the steps this one waits for.")
    retry: RetryDefinition | None = None
    timeout_seconds: float | None = Field(default=None, ge=0.01, description="Per attempt; none means the default.")
    approval: ApprovalDefinition | None = None

    def as_fields(self) -> dict[str, Any]:
        """The WorkflowNode fields this definition sets (the agent as its slug)."""
        retry = self.retry or RetryDefinition()
        approval = self.approval or ApprovalDefinition()
        return {
            "key": self.key,
            "name": self.name,
            "agent": self.agent,
            "action": self.action,
            "inputs": self.inputs,
            "depends_on": self.depends_on or [],
            "max_attempts": retry.max_attempts,
            "backoff_seconds": retry.backoff_seconds,
            "backoff_max_seconds": retry.backoff_max_seconds,
            "backoff_jitter": retry.jitter,
            "timeout_seconds": self.timeout_seconds,
            "requires_approval": approval.required,
            "approver_groups": approval.groups or [],
            "approver_users": approval.users or [],
            "required_approvals": approval.required_approvals,
            "approval_timeout_seconds": approval.timeout_seconds,
            "approval_timeout_action": approval.timeout_action,
            "allow_self_approval": approval.allow_self_approval,
        }


def _graph_error(node: str, field: str, message: str) -> PydanticCustomError:
    # The node and field travel in the context so that a form can show the error next to the field.
    return PydanticCustomError("graph", "{message}", {"message": message, "node": node, "field": field})


def _ancestors(edges: dict[str, list[str]], key: str) -> set[str]:
    seen: set[str] = set()
    todo = list(edges.get(key, []))
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(edges.get(dep, []))
    return seen


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a list of keys (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(key: str) -> list[str] | None:
        state[key] = 1
        stack.append(key)
        for dep in edges.get(key, []):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[key] = 2
        return None

    for key in edges:
        if key not in state and (found := visit(key)):
            return found
    return None


class WorkflowDefinition(_Strict):
    """A named DAG of steps."""

    slug: Slug = Field(description="The workflow's identifier in the API, the console and metrics.")
    name: str = Field(default="", description="What the console calls the workflow; the slug when empty.")
    description: str = ""
    enabled: bool = Field(default=True, description="Whether the workflow may be triggered.")
    nodes: list[NodeDefinition] = Field(min_length=1, description="The steps, in the order the console lists them.")

    @model_validator(mode="after")
    def _valid_graph(self, info: ValidationInfo) -> WorkflowDefinition:
        edges: dict[str, list[str]] = {}
        for node in self.nodes:
            if node.key in edges:
                raise _graph_error(node.key, "key", f"node {node.key!r} is defined twice")
            edges[node.key] = node.depends_on or []
        known = (info.context or {}).get("known_agents")
        for node in self.nodes:
            if known is not None and node.agent not in known:
                raise _graph_error(node.key, "agent", f"node {node.key!r}: unknown agent {node.agent!r}")
            for dep in edges[node.key]:
                if dep not in edges:
                    raise _graph_error(node.key, "depends_on", f"node {node.key!r}: depends on missing node {dep!r}")
                if dep == node.key:
                    raise _graph_error(node.key, "depends_on", f"node {node.key!r} depends on itself")
        cycle = find_cycle(edges)
        if cycle:
            raise _graph_error(cycle[0], "depends_on", f"dependency cycle {' -> '.join(cycle)}")
        for node in self.nodes:
            upstream = _ancestors(edges, node.key)
            try:
                used = references(node.inputs)
            except TemplateError as exc:
                raise _graph_error(node.key, "inputs", f"node {node.key!r}: {exc}") from exc
            for ref in used:
                root, _, rest = ref.partition(".")
                if root not in ("context", "steps", "run"):
                    raise _graph_error(
                        node.key,
                        "inputs",
                        f"node {node.key!r}: reference {ref!r} must start with context., steps. or run.",
                    )
                step = rest.split(".", 1)[0]
                if root == "steps" and step not in upstream:
                    raise _graph_error(
                        node.key,
                        "inputs",
                        f"node {node.key!r}: reference {ref!r} names step {step!r}, which is not upstream of this node",
                    )
        return self


class AgentDefinition(_Strict):
    """An agent: an executor type and its config, which the type checks."""

    slug: Slug = Field(description="The agent's identifier; workflow nodes name it.")
    name: str = ""
    type: Annotated[str, Field(json_schema_extra={"enum": sorted(EXECUTORS)})] = Field(
        description="The executor that runs the agent's steps."
    )
    config: dict[str, Any] | None = Field(default=None, description="Settings of the executor type.")
    enabled: bool = True
    description: str = ""

    @model_validator(mode="after")
    def _known_type_and_valid_config(self) -> AgentDefinition:
        if self.type not in EXECUTORS:
            raise PydanticCustomError(
                "agent_type",
                "{message}",
                {"message": f"unknown type {self.type!r} (known: {', '.join(sorted(EXECUTORS))})"},
            )
        problems = executor_class(self.type).validate_config(self.config or {})
        if problems:
            raise PydanticCustomError("agent_config", "{message}", {"message": f"config {'; '.join(problems)}"})
        return self


class DefinitionFile(_Strict):
    """A definition file: agents, one workflow, more workflows, in any mix."""

    model_config = ConfigDict(
        title="CommandCenter definitions",
        json_schema_extra={"description": "A file under workflows/definitions/: agents and workflows."},
    )

    agents: list[AgentDefinition] | None = None
    workflow: WorkflowDefinition | None = None
    workflows: list[WorkflowDefinition] | None = None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a definition file (draft 2020-12)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **DefinitionFile.model_json_schema()}


def json_schema_text() -> str:
    """``json_schema`` as the committed file holds it."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


# --- Messages ----------------------------------------------------------------------------------------------


def _label(kind: str, raw: Any, field: str, position: int) -> str:
    value = raw.get(field) if isinstance(raw, dict) else None
    return f"{kind} {value if isinstance(value, str) else '#' + str(position)!r}"


def _shown(value: Any) -> str:
    # 2.0 from a form's number field reads as the 2 a YAML file holds, so both say the same.
    return repr(int(value)) if isinstance(value, float) and value.is_integer() else repr(value)


def _message(error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    value = _shown(error["input"])
    if "message" in ctx:
        return str(ctx["message"])
    if kind == "missing":
        return "is required"
    if kind == "greater_than_equal":
        return f"{value} is below the minimum of {ctx['ge']:g}"
    if kind in ("int_type", "int_from_float"):
        return f"{error['input']!r} is not an integer"
    if kind == "float_type":
        return f"{value} is not a number"
    if kind == "bool_type":
        return f"{value} is not true or false"
    if kind == "string_type":
        return f"{value} is not a string"
    if kind == "string_pattern_mismatch":
        return f"{value} must be a lowercase slug"
    if kind in ("dict_type", "model_type"):
        return "must be a mapping"
    if kind == "list_type":
        return "must be a list"
    if kind == "too_short":  # only nodes have a minimum length
        return "a workflow needs at least one node"
    if kind == "literal_error":
        return f"{value} must be {ctx['expected']}"
    return str(error["msg"])


def _where(raw: Any, loc: tuple[int | str, ...]) -> tuple[list[str], list[str]]:
    """The labels (workflow 'w', node 'a') and the dotted field path of an error location."""
    labels: list[str] = []
    path: list[str] = []
    node = raw
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        item = node.get(part) if isinstance(node, dict) and isinstance(part, str) else None
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            item = node[part]
        label = {"agents": ("agent", "slug"), "workflows": ("workflow", "slug"), "nodes": ("node", "key")}.get(
            str(part)
        )
        if label and not path and parts and isinstance(parts[0], int):
            index = int(parts.pop(0))
            item = item[index] if isinstance(item, list) and index < len(item) else None
            labels.append(_label(label[0], item, label[1], index))
        elif part == "workflow" and not labels and not path:
            labels.append(_label("workflow", item, "slug", 0))
        else:
            path.append(str(part))
        node = item
    return labels, path


def problems(exc: ValidationError, raw: Any, *, where: str = "") -> list[str]:
    """Messages naming where each error is, ``where`` first (a file, a workflow), then the field path."""
    found: list[str] = []
    unknown: dict[tuple[int | str, ...], list[str]] = defaultdict(list)
    for error in exc.errors():
        if error["type"] == "extra_forbidden":
            unknown[tuple(error["loc"][:-1])].append(str(error["loc"][-1]))
    for error in exc.errors():
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            if loc[:-1] not in unknown:
                continue
            loc, message = loc[:-1], f"unknown field(s) {', '.join(sorted(unknown.pop(loc[:-1])))}"
        else:
            message = _message(error)
        labels, path = _where(raw, loc)
        head = ": ".join(part for part in [where, *labels] if part)
        field = ".".join(path)
        found.append(f"{head}{' ' + field if field else ''}: {message}" if head or field else message)
    return found
