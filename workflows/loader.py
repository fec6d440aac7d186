"""Workflow and agent definitions as YAML files, validated and synced into the database.

A file holds ``agents:`` (a list), ``workflow:`` (one mapping) or ``workflows:`` (a list), in any mix.
Every error names the file and, where there is one, the workflow and node, so a bad definition is fixed
from the message alone. Every rule is in ``workflows.schema``, which the admin's workflow form shares.
Syncing is idempotent: unchanged definitions keep their version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.db import transaction
from pydantic import ValidationError

from agents.executors import executor_class
from agents.models import Agent
from workflows.models import Workflow, WorkflowNode
from workflows.schema import DefinitionFile, problems


class DefinitionError(ValueError):
    """A definition that cannot be synced; the message says where and why."""


@dataclass
class Definitions:
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def _parse(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise DefinitionError(f"{path}: expected a mapping with agents:, workflow: or workflows:")
    return data


def _agent_slugs(data: dict[str, Any]) -> set[str]:
    agents = data.get("agents")
    return (
        {a["slug"] for a in agents if isinstance(a, dict) and isinstance(a.get("slug"), str)}
        if isinstance(agents, list)
        else set()
    )


def _read(path: Path, data: dict[str, Any], defs: Definitions, known_agents: set[str]) -> None:
    """Validates one file through ``workflows.schema`` and adds what it defines to ``defs``."""
    try:
        parsed = DefinitionFile.model_validate(data, context={"known_agents": known_agents})
    except ValidationError as exc:
        raise DefinitionError("\n".join(problems(exc, data, where=str(path)))) from exc
    for agent in parsed.agents or []:
        if agent.slug in defs.agents:
            raise DefinitionError(
                f"{path}: agent {agent.slug!r}: defined twice ({defs.sources['agent:' + agent.slug]} and {path})"
            )
        defs.agents[agent.slug] = {
            "name": agent.name,
            "type": agent.type,
            "config": executor_class(agent.type).normalise_config(agent.config or {}),
            "enabled": agent.enabled,
            "description": agent.description,
        }
        defs.sources["agent:" + agent.slug] = str(path)
    workflows = [parsed.workflow] if parsed.workflow else []
    for workflow in [*workflows, *(parsed.workflows or [])]:
        slug = workflow.slug
        if slug in defs.workflows:
            raise DefinitionError(
                f"{path}: workflow {slug!r}: defined twice ({defs.sources['workflow:' + slug]} and {path})"
            )
        defs.workflows[slug] = {
            "name": workflow.name,
            "description": workflow.description,
            "enabled": workflow.enabled,
            "nodes": [node.as_fields() for node in workflow.nodes],
        }
        defs.sources["workflow:" + slug] = str(path)


def load(path: Path) -> Definitions:
    """Reads a file, or every *.yaml / *.yml file under a directory, into validated definitions."""
    if not path.exists():
        raise DefinitionError(f"{path}: no such file or directory")
    files = sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")]) if path.is_dir() else [path]
    if not files:
        raise DefinitionError(f"{path}: no *.yaml files found")
    parsed = [(file, _parse(file)) for file in files]
    # A node may name an agent defined in any of the files, or one already in the database.
    known = set(Agent.objects.values_list("slug", flat=True))
    for _, data in parsed:
        known |= _agent_slugs(data)
    defs = Definitions()
    for file, data in parsed:
        _read(file, data, defs, known)
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
