"""Renders step inputs from the run context and upstream outputs, without executing any code.

The grammar, the only one: ``{{`` always opens a reference and ``}}`` closes it; a string may hold any
number of them, side by side or among text. Inside the braces comes a dotted path into ``context``,
``steps.<key>.output`` or ``run`` (id, workflow, trigger), list items addressed by index
(``steps.scan.output.findings.0``), optionally followed by ``| default(<json>)``, which supplies a value
for a missing reference. Anything else between the braces, and a ``{{`` that is never closed, is an error
naming the string and the place, so a typo fails with a clear message instead of sending an empty value
downstream.

A string that is exactly one reference (surrounding whitespace aside) becomes the referenced value with its
JSON type kept; references inside a longer string are interpolated as text (non-strings as JSON).

``parse`` is the one place that reads the grammar: the renderer and ``references`` (with which the loader
and the admin validate definitions) both go through it, so a template is accepted at sync time exactly
when it can be rendered.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_OPEN, _CLOSE = "{{", "}}"
_REFERENCE = re.compile(r"[A-Za-z_][\w-]*(?:\.[\w-]+)*")
_SPACE = re.compile(r"\s*")
_DEFAULT = re.compile(r"\|\s*default\s*\(\s*")
_JSON = json.JSONDecoder()
_MISSING = object()


class TemplateError(ValueError):
    """An input template that cannot be rendered; the message names the reference and where it was used."""


@dataclass(frozen=True)
class Reference:
    """One ``{{ path | default(value) }}`` of a template string."""

    path: str
    default: Any = _MISSING

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING


Part = str | Reference


def _skip_space(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    return match.end() if match else at


def parse(text: str, where: str = "inputs") -> list[Part]:
    """The literal text and references of one template string, in order; TemplateError if it breaks the grammar."""
    parts: list[Part] = []
    at = 0
    while True:
        start = text.find(_OPEN, at)
        if start < 0:
            if at < len(text):
                parts.append(text[at:])
            return parts
        if start > at:
            parts.append(text[at:start])
        reference, at = _reference(text, start, where)
        parts.append(reference)


def _reference(text: str, start: int, where: str) -> tuple[Reference, int]:
    """The reference whose ``{{`` is at ``start`` and the position after its ``}}``."""
    end = text.find(_CLOSE, start + len(_OPEN))
    shown = text[start : end + len(_CLOSE)] if end >= 0 else text[start:]
    if end < 0:
        raise TemplateError(f"{where}: {_short(shown)!r} opens a reference with '{{{{' that is never closed")
    at = _skip_space(text, start + len(_OPEN))
    path = _REFERENCE.match(text, at)
    if path is None:
        raise TemplateError(f"{where}: {_expression(shown)!r} is not a reference (expected e.g. context.host)")
    at = _skip_space(text, path.end())
    default: Any = _MISSING
    pipe = _DEFAULT.match(text, at)
    if pipe:
        try:
            default, at = _JSON.raw_decode(text, pipe.end())
        except json.JSONDecodeError:
            raise TemplateError(f"default value in {where} is not JSON: {_short(text[pipe.end() :])!r}") from None
        at = _skip_space(text, at)
        if not text.startswith(")", at):
            raise TemplateError(f"{where}: {_short(shown)!r}: default(...) takes one JSON value and a ')'")
        at = _skip_space(text, at + 1)
    if not text.startswith(_CLOSE, at):
        raise TemplateError(f"{where}: {_expression(shown)!r} is not a reference (expected e.g. context.host)")
    return Reference(path.group(), default), at + len(_CLOSE)


def _expression(shown: str) -> str:
    inner = shown[len(_OPEN) :]
    return (inner[: -len(_CLOSE)] if inner.endswith(_CLOSE) else inner).strip()


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _lookup(scope: dict[str, Any], path: str) -> Any:
    value: Any = scope
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _evaluate(reference: Reference, scope: dict[str, Any], where: str) -> Any:
    value = _lookup(scope, reference.path)
    if value is _MISSING:
        if reference.has_default:
            return reference.default
        raise TemplateError(f"missing reference '{reference.path}' in {where}")
    return value


def _render(value: Any, scope: dict[str, Any], where: str) -> Any:
    if isinstance(value, str):
        parts = parse(value, where)
        references = [part for part in parts if isinstance(part, Reference)]
        if len(references) == 1 and all(isinstance(p, Reference) or not p.strip() for p in parts):
            return _evaluate(references[0], scope, where)
        out = []
        for part in parts:
            if isinstance(part, Reference):
                found = _evaluate(part, scope, where)
                out.append(found if isinstance(found, str) else json.dumps(found))
            else:
                out.append(part)
        return "".join(out)
    if isinstance(value, dict):
        return {k: _render(v, scope, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, scope, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def render_inputs(template: Any, scope: dict[str, Any]) -> Any:
    """Renders an inputs template; raises TemplateError naming the first bad reference."""
    return _render(template, scope, "inputs")


def _walk(value: Any, where: str) -> list[Reference]:
    if isinstance(value, str):
        return [part for part in parse(value, where) if isinstance(part, Reference)]
    if isinstance(value, dict):
        return [ref for k, v in value.items() for ref in _walk(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [ref for i, v in enumerate(value) for ref in _walk(v, f"{where}[{i}]")]
    return []


def references(template: Any) -> list[str]:
    """The path of every reference a template uses, in order; TemplateError when a string breaks the grammar."""
    return [ref.path for ref in _walk(template, "inputs")]
