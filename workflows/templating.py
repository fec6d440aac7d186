"""Renders step inputs from the run context and upstream outputs, without executing any code.

A string that is exactly one ``{{ reference }}`` becomes the referenced value with its JSON type kept;
references inside a longer string are interpolated as text. References are dotted paths into
``context``, ``steps.<key>.output`` and ``run`` (id, workflow, trigger); list items are addressed by
index (``steps.scan.output.findings.0``). ``{{ ref | default(<json>) }}`` supplies a value for a missing
reference. Anything else is an error naming the reference, so a typo fails the step with a clear message
instead of sending an empty value downstream.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_REFERENCE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*$")
_DEFAULT = re.compile(r"^(?P<ref>.+?)\s*\|\s*default\((?P<value>.*)\)$")
_MISSING = object()


class TemplateError(ValueError):
    """An input template that cannot be rendered; the message names the reference and where it was used."""


def _lookup(scope: dict[str, Any], reference: str) -> Any:
    value: Any = scope
    for part in reference.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _evaluate(expression: str, scope: dict[str, Any], where: str) -> Any:
    default: Any = _MISSING
    match = _DEFAULT.match(expression)
    if match:
        expression = match.group("ref")
        try:
            default = json.loads(match.group("value"))
        except json.JSONDecodeError:
            raise TemplateError(f"default value in {where} is not JSON: {match.group('value')!r}") from None
    if not _REFERENCE.match(expression):
        raise TemplateError(f"{where}: {expression!r} is not a reference (expected e.g. context.host)")
    value = _lookup(scope, expression)
    if value is _MISSING:
        if default is not _MISSING:
            return default
        raise TemplateError(f"missing reference '{expression}' in {where}")
    return value


def _render(value: Any, scope: dict[str, Any], where: str) -> Any:
    if isinstance(value, str):
        whole = _TOKEN.fullmatch(value.strip())
        if whole:
            return _evaluate(whole.group(1), scope, where)

        def substitute(m: re.Match[str]) -> str:
            found = _evaluate(m.group(1), scope, where)
            return found if isinstance(found, str) else json.dumps(found)

        return _TOKEN.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _render(v, scope, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, scope, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def render_inputs(template: Any, scope: dict[str, Any]) -> Any:
    """Renders an inputs template; raises TemplateError naming the first bad reference."""
    return _render(template, scope, "inputs")


def references(template: Any) -> list[str]:
    """Every reference a template uses, for validation at sync time."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            for m in _TOKEN.finditer(value):
                expr = m.group(1)
                d = _DEFAULT.match(expr)
                found.append(d.group("ref") if d else expr)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(template)
    return found
