"""Callables for the ``python`` agent type used by the demo workflows."""

from __future__ import annotations

from typing import Any

from agents.executors.base import StepContext


def summarise(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Counts findings by severity."""
    counts: dict[str, int] = {}
    for finding in inputs.get("findings", []):
        severity = str(finding.get("severity", "unknown"))
        counts[severity] = counts.get(severity, 0) + 1
    return {"by_severity": counts, "total": sum(counts.values())}
