"""Workflow and agent definitions as YAML files, validated and synced into the database.

A file holds ``agents:`` (a list), ``workflow:`` (one mapping) or ``workflows:`` (a list), in any mix.
Every error names the file and, where there is one, the workflow and node, so a bad definition is fixed
from the message alone. Syncing is idempotent: unchanged definitions keep their version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.db import transaction

from agents.executors import EXECUTORS, executor_class
from agents.models import Agent
from workflows.models import Workflow, WorkflowNode
from workflows.templating import TemplateError, references

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_NODE_KEYS = {
    "key",
    "name",
    "agent",
    "action",
    "inputs",
    "depends_on",
    "retry",
    "timeout_seconds",
    "approval",
}
_RETRY_KEYS = {"max_attempts", "backoff_seconds", "backoff_max_seconds", "jitter"}
_APPROVAL_KEYS = {
    "required",
    "groups",
    "users",
    "required_approvals",
    "timeout_seconds",
    "timeout_action",
    "allow_self_approval",
}


class DefinitionError(ValueError):
    """A definition that cannot be synced; the message says where and why."""


@dataclass
class Definitions:
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


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


def ancestors(edges: dict[str, list[str]], key: str) -> set[str]:
    seen: set[str] = set()
    todo = list(edges.get(key, []))
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(edges.get(dep, []))
    return seen


def validate_graph(where: str, nodes: list[dict[str, Any]], known_agents: set[str]) -> None:
    """Checks keys, agents, dependencies, cycles and step references of a list of node definitions."""
    if not nodes:
        raise DefinitionError(f"{where}: a workflow needs at least one node")
    edges: dict[str, list[str]] = {}
    for node in nodes:
        key = node.get("key")
        if not isinstance(key, str) or not _SLUG.match(key):
            raise DefinitionError(f"{where}: node key {key!r} must be a lowercase slug")
        if key in edges:
            raise DefinitionError(f"{where}: node {key!r} is defined twice")
        deps = node.get("depends_on") or []
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise DefinitionError(f"{where}: node {key!r}: depends_on must be a list of node keys")
        edges[key] = deps
    for node in nodes:
        key = node["key"]
        if node.get("agent") not in known_agents:
            raise DefinitionError(f"{where}: node {key!r}: unknown agent {node.get('agent')!r}")
        for dep in edges[key]:
            if dep not in edges:
                raise DefinitionError(f"{where}: node {key!r}: depends on missing node {dep!r}")
            if dep == key:
                raise DefinitionError(f"{where}: node {key!r} depends on itself")
    cycle = find_cycle(edges)
    if cycle:
        raise DefinitionError(f"{where}: dependency cycle {' -> '.join(cycle)}")
    for node in nodes:
        upstream = ancestors(edges, node["key"])
        try:
            used = references(node.get("inputs", {}))
        except TemplateError as exc:
            raise DefinitionError(f"{where}: node {node['key']!r}: {exc}") from exc
        for ref in used:
            root, _, rest = ref.partition(".")
            if root not in ("context", "steps", "run"):
                raise DefinitionError(
                    f"{where}: node {node['key']!r}: reference {ref!r} must start with context., steps. or run."
                )
            if root == "steps":
                step = rest.split(".", 1)[0]
                if step not in upstream:
                    raise DefinitionError(
                        f"{where}: node {node['key']!r}: reference {ref!r} names step {step!r}, "
                        "which is not upstream of this node"
                    )


def _check_keys(where: str, data: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise DefinitionError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")


def _number(where: str, value: Any, *, minimum: float, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise DefinitionError(f"{where}: {value!r} is not {'an integer' if integer else 'a number'}")
    if value < minimum:
        raise DefinitionError(f"{where}: {value!r} is below the minimum of {minimum:g}")
    return value


def _names(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise DefinitionError(f"{where}: must be a list of names")
    return list(value)


def normalise_node(where: str, raw: Any, position: int) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise DefinitionError(f"{where}: each node must be a mapping")
    key = raw.get("key", f"#{position}")
    here = f"{where}: node {key!r}"
    _check_keys(here, raw, _NODE_KEYS)
    retry = raw.get("retry") or {}
    approval = raw.get("approval") or {}
    if not isinstance(retry, dict) or not isinstance(approval, dict):
        raise DefinitionError(f"{here}: retry and approval must be mappings")
    _check_keys(f"{here} retry", retry, _RETRY_KEYS)
    _check_keys(f"{here} approval", approval, _APPROVAL_KEYS)
    inputs = raw.get("inputs", {})
    if not isinstance(inputs, dict):
        raise DefinitionError(f"{here}: inputs must be a mapping")
    timeout_action = approval.get("timeout_action", "reject")
    if timeout_action not in WorkflowNode.ApprovalTimeoutAction.values:
        raise DefinitionError(f"{here}: approval timeout_action must be reject or approve")
    timeout = raw.get("timeout_seconds")
    approval_timeout = approval.get("timeout_seconds")
    groups = _names(f"{here} approval.groups", approval.get("groups") or [])
    users = _names(f"{here} approval.users", approval.get("users") or [])
    required_approvals = int(
        _number(f"{here} approval.required_approvals", approval.get("required_approvals", 1), minimum=1, integer=True)
    )
    if approval.get("required") and users and not groups and required_approvals > len(set(users)):
        # Listed users without groups are the only ones who may decide, each counting once toward the quorum.
        listed = ", ".join(sorted(set(users)))
        raise DefinitionError(
            f"{here} approval.required_approvals: {required_approvals} approvals needed but only "
            f"{len(set(users))} user(s) may decide ({listed}) and no groups are listed, so the gate could "
            "never be approved"
        )
    return {
        "key": key,
        "name": str(raw.get("name", "")),
        "agent": raw.get("agent"),
        "action": str(raw.get("action", "")),
        "inputs": inputs,
        "depends_on": raw.get("depends_on") or [],
        "max_attempts": int(
            _number(f"{here} retry.max_attempts", retry.get("max_attempts", 1), minimum=1, integer=True)
        ),
        "backoff_seconds": _number(f"{here} retry.backoff_seconds", retry.get("backoff_seconds", 1.0), minimum=0),
        "backoff_max_seconds": _number(
            f"{here} retry.backoff_max_seconds", retry.get("backoff_max_seconds", 300.0), minimum=0
        ),
        "backoff_jitter": _number(f"{here} retry.jitter", retry.get("jitter", 0.1), minimum=0),
        "timeout_seconds": None if timeout is None else _number(f"{here} timeout_seconds", timeout, minimum=0.01),
        "requires_approval": bool(approval.get("required", False)),
        "approver_groups": groups,
        "approver_users": users,
        "required_approvals": required_approvals,
        "approval_timeout_seconds": None
        if approval_timeout is None
        else _number(f"{here} approval.timeout_seconds", approval_timeout, minimum=1),
        "approval_timeout_action": timeout_action,
        "allow_self_approval": bool(approval.get("allow_self_approval", False)),
    }


def _read(path: Path, defs: Definitions) -> None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise DefinitionError(f"{path}: expected a mapping with agents:, workflow: or workflows:")
    _check_keys(str(path), data, {"agents", "workflow", "workflows"})
    for raw in data.get("agents") or []:
        slug = raw.get("slug") if isinstance(raw, dict) else None
        where = f"{path}: agent {slug!r}"
        if not isinstance(slug, str) or not _SLUG.match(slug):
            raise DefinitionError(f"{where}: slug must be a lowercase slug")
        _check_keys(where, raw, {"slug", "name", "type", "config", "enabled", "description"})
        if raw.get("type") not in EXECUTORS:
            raise DefinitionError(f"{where}: unknown type {raw.get('type')!r} (known: {', '.join(sorted(EXECUTORS))})")
        config = raw.get("config") or {}
        problems = executor_class(raw["type"]).validate_config(config)
        if problems:
            raise DefinitionError(f"{where}: config {'; '.join(problems)}")
        config = executor_class(raw["type"]).normalise_config(config)
        if slug in defs.agents:
            raise DefinitionError(f"{where}: defined twice ({defs.sources['agent:' + slug]} and {path})")
        defs.agents[slug] = {**raw, "config": config}
        defs.sources["agent:" + slug] = str(path)
    workflows = data.get("workflows") or []
    if data.get("workflow"):
        workflows = [data["workflow"], *workflows]
    for raw in workflows:
        slug = raw.get("slug") if isinstance(raw, dict) else None
        where = f"{path}: workflow {slug!r}"
        if not isinstance(slug, str) or not _SLUG.match(slug):
            raise DefinitionError(f"{where}: slug must be a lowercase slug")
        _check_keys(where, raw, {"slug", "name", "description", "enabled", "nodes"})
        if slug in defs.workflows:
            raise DefinitionError(f"{where}: defined twice ({defs.sources['workflow:' + slug]} and {path})")
        nodes = raw.get("nodes")
        if not isinstance(nodes, list):
            raise DefinitionError(f"{where}: nodes must be a list")
        defs.workflows[slug] = {**raw, "nodes": [normalise_node(where, n, i) for i, n in enumerate(nodes)]}
        defs.sources["workflow:" + slug] = str(path)


def load(path: Path) -> Definitions:
    """Reads a file, or every *.yaml / *.yml file under a directory, into validated definitions."""
    if not path.exists():
        raise DefinitionError(f"{path}: no such file or directory")
    files = sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")]) if path.is_dir() else [path]
    if not files:
        raise DefinitionError(f"{path}: no *.yaml files found")
    defs = Definitions()
    for file in files:
        _read(file, defs)
    known = set(defs.agents) | set(Agent.objects.values_list("slug", flat=True))
    for slug, wf in defs.workflows.items():
        validate_graph(f"{defs.sources['workflow:' + slug]}: workflow {slug!r}", wf["nodes"], known)
    return defs


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _node_fields(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k not in ("key", "agent")}


@transaction.atomic
def sync(path: Path) -> SyncReport:
    """Loads definitions and writes them to the database; all or nothing."""
    defs = load(path)
    report = SyncReport()
    for slug, raw in defs.agents.items():
        values = {
            "name": raw.get("name", ""),
            "type": raw["type"],
            "config": raw["config"],
            "enabled": bool(raw.get("enabled", True)),
            "description": raw.get("description", ""),
        }
        agent, created = Agent.objects.get_or_create(slug=slug, defaults=values)
        if created:
            report.created.append(f"agent {slug}")
        elif any(getattr(agent, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(agent, k, v)
            agent.save()
            report.updated.append(f"agent {slug}")
        else:
            report.unchanged.append(f"agent {slug}")
    agents = {a.slug: a for a in Agent.objects.all()}
    for slug, raw in defs.workflows.items():
        values = {
            "name": raw.get("name") or slug,
            "description": raw.get("description", ""),
            "enabled": bool(raw.get("enabled", True)),
            "source_file": defs.sources["workflow:" + slug],
        }
        workflow, created = Workflow.objects.get_or_create(slug=slug, defaults=values)
        before = None if created else workflow.snapshot()
        for k, v in values.items():
            setattr(workflow, k, v)
        keys = []
        for position, node in enumerate(raw["nodes"]):
            keys.append(node["key"])
            WorkflowNode.objects.update_or_create(
                workflow=workflow,
                key=node["key"],
                defaults={**_node_fields(node), "agent": agents[node["agent"]], "position": position},
            )
        workflow.nodes.exclude(key__in=keys).delete()
        if created:
            workflow.save()
            report.created.append(f"workflow {slug}")
            continue
        after = workflow.snapshot()
        after["version"] = before["version"] if before else 1
        if before != after:
            workflow.version += 1
            workflow.save()
            report.updated.append(f"workflow {slug} (version {workflow.version})")
        else:
            workflow.save()
            report.unchanged.append(f"workflow {slug}")
    return report
