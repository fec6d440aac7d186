from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from agents.executors.base import AgentError, Executor, StepContext


class PythonExecutor(Executor):
    """Calls ``callable(inputs, ctx)`` named by a dotted path in config; it returns a dict.

    Only modules listed in PYTHON_AGENT_ALLOWED_MODULES (or below them) may be called.
    """

    type = "python"

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        path = config.get("callable")
        if not isinstance(path, str) or "." not in path:
            return ["callable: must be a dotted path such as agents.demo.summarise"]
        allowed = settings.PYTHON_AGENT_ALLOWED_MODULES
        if not any(path == m or path.startswith(m + ".") for m in allowed):
            return [f"callable: {path!r} is outside PYTHON_AGENT_ALLOWED_MODULES ({', '.join(allowed)})"]
        return []

    def execute(self, action: str, inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        problems = self.validate_config(self.config)
        if problems:
            raise AgentError("; ".join(problems), permanent=True)
        try:
            func = import_string(self.config["callable"])
        except ImportError as exc:
            raise AgentError(f"cannot import {self.config['callable']!r}: {exc}", permanent=True) from exc
        result = func(inputs, ctx)
        if not isinstance(result, dict):
            raise AgentError(f"{self.config['callable']} returned {type(result).__name__}, not a dict", permanent=True)
        return result
