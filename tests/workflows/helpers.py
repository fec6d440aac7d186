"""Builders for workflows defined inline in tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from workflows.loader import sync
from workflows.models import Workflow


def define(
    tmp_path: Path, slug: str, nodes: list[dict[str, Any]], agents: list[dict[str, Any]] | None = None
) -> Workflow:
    """Writes a definition file and syncs it, exactly as `sync_workflows` would."""
    doc: dict[str, Any] = {"workflow": {"slug": slug, "name": slug, "nodes": nodes}}
    if agents:
        doc["agents"] = agents
    path = tmp_path / f"{slug}.yaml"
    path.write_text(yaml.safe_dump(doc))
    sync(path)
    return Workflow.objects.get(slug=slug)
