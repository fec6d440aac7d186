"""Input that is valid JSON (or a valid Python string) but that PostgreSQL refuses to store.

``jsonb`` has no NaN or Infinity, and neither ``jsonb`` nor ``text`` can hold the NUL character (U+0000).
Python's JSON parser accepts all three, so without a check they reach the database and fail there as a 500.
Inputs from outside are checked with ``unstorable`` where they are read, so the refusal names what and where.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, WithJsonSchema

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if _PLAIN_KEY.match(key) else f"{path}[{json.dumps(key)}]"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def unstorable(value: Any, where: str) -> str | None:
    """The first part of ``value`` PostgreSQL cannot store, as "<where>.<path>: <problem>", or None.

    ``value`` is what a JSON parser returns (dicts, lists, strings, numbers, booleans, None) or a plain
    string; ``where`` names it for the reader, e.g. "context" or "comment".
    """
    todo: list[tuple[str, Any]] = [(where, value)]
    while todo:
        path, item = todo.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return f"{path}: NUL character not allowed"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{path}: non-finite number ({_number(item)}) not allowed"
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                key = str(key)
                if "\x00" in key:
                    return f"{path}: NUL character not allowed in key {json.dumps(key)}"
                children.append((_child(path, key), child))
            todo.extend(reversed(children))  # depth first, in document order
        elif isinstance(item, list | tuple):
            todo.extend(reversed([(f"{path}[{i}]", child) for i, child in enumerate(item)]))
    return None


def json_object(data: Any, expected: str) -> Any:
    """A request body schema's "before" check: the parsed body, or ValueError if it is not a JSON object.

    ``expected`` completes the message "the request body must be a JSON object ...", e.g. "with 'context'".
    """
    if hasattr(data, "_obj"):  # ninja's DjangoGetter around the parsed body
        data = data._obj
    if not isinstance(data, dict):
        raise ValueError(f"the request body must be a JSON object {expected}")
    return data


# What ``unstorable`` accepts, as JSON Schema, for API documentation: strings and object keys without NUL at
# any depth (NaN and Infinity are not JSON to begin with). Referenced as "#/components/schemas/StorableJson".
NO_NUL = "^[^\\u0000]*$"
STORABLE_JSON_SCHEMA: dict[str, Any] = {
    "description": "Any JSON value whose strings and object keys hold no NUL character.",
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": {"$ref": "#/components/schemas/StorableJson"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": "#/components/schemas/StorableJson"},
        },
    ],
}
# Marks an object field whose values must be storable; config.api.Api expands it into the schema above in the
# OpenAPI document (pydantic cannot hold a reference to a schema it does not define itself).
STORABLE_OBJECT: dict[str, Any] = {"x-storable": True}


def expand_storable(node: Any) -> None:
    """Replaces each ``x-storable`` mark in an OpenAPI document with the storable-values constraints."""
    if isinstance(node, dict):
        if node.pop("x-storable", False):
            node["propertyNames"] = {"pattern": NO_NUL}
            node["additionalProperties"] = {"$ref": "#/components/schemas/StorableJson"}
        for child in node.values():
            expand_storable(child)
    elif isinstance(node, list):
        for child in node:
            expand_storable(child)


# What ``storable`` puts in place of what PostgreSQL cannot hold. Documented in the README (alerts section).
NON_FINITE = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}  # Prometheus's own spelling of these values
NUL_REPLACEMENT = "\ufffd"
TOO_DEEP = "…(nested too deeply)"
MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with what PostgreSQL's text and jsonb cannot hold (NUL, lone UTF-16 surrogates) replaced by U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", NUL_REPLACEMENT)
    return _SURROGATE.sub(NUL_REPLACEMENT, text)


def storable(value: Any, depth: int = 0) -> Any:
    """A copy of a parsed JSON value that ``jsonb`` can store, for content that is kept rather than refused.

    Non-finite numbers become the strings "NaN", "+Inf" and "-Inf"; NUL characters and lone surrogates in
    strings and keys become U+FFFD; anything nested deeper than MAX_DEPTH becomes the string TOO_DEEP (which
    also keeps the encoder off Python's recursion limit). Integers too long to print (over 4,000 digits)
    become "+Inf" or "-Inf".
    """
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return NON_FINITE["nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")]
    if isinstance(value, int):
        if value.bit_length() > 13_000:  # ~4,000 decimal digits: Python refuses to print more by default
            return NON_FINITE["inf" if value > 0 else "-inf"]
        return value
    if depth >= MAX_DEPTH and isinstance(value, dict | list | tuple):
        return TOO_DEEP
    if isinstance(value, dict):
        return {storable_text(str(k)): storable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v, depth + 1) for v in value]
    return storable_text(str(value))


TRUNCATED = "…"  # the visible marker at the end of text cut to fit its column


def bounded(text: str, limit: int) -> str:
    """``text`` made storable and cut to ``limit`` characters, ending in TRUNCATED when it was cut."""
    text = storable_text(text)
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL character not allowed")
    return value


# A text query parameter (e.g. ``?workflow=``) that reaches the database: 422 naming it if it holds NUL.
QueryText = Annotated[str, AfterValidator(_no_nul), WithJsonSchema({"type": "string", "pattern": NO_NUL})]
