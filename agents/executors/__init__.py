"""Executor registry: agent type -> dotted path of its Executor class, imported on first use."""

from __future__ import annotations

from functools import cache

from django.utils.module_loading import import_string

from agents.executors.base import Executor

EXECUTORS: dict[str, str] = {
    "echo": "agents.executors.builtin.EchoExecutor",
    "sleep": "agents.executors.builtin.SleepExecutor",
    "fail": "agents.executors.builtin.FailExecutor",
    "flaky": "agents.executors.builtin.FlakyExecutor",
    "scanner": "agents.executors.builtin.ScannerExecutor",
    "http": "agents.executors.http.HttpExecutor",
    "command": "agents.executors.command.CommandExecutor",
    "python": "agents.executors.python.PythonExecutor",
    "notifier": "agents.executors.notifier.NotifierExecutor",
}


class UnknownAgentType(LookupError):
    def __init__(self, agent_type: str) -> None:
        super().__init__(f"unknown agent type {agent_type!r} (known: {', '.join(sorted(EXECUTORS))})")


@cache
def executor_class(agent_type: str) -> type[Executor]:
    try:
        path = EXECUTORS[agent_type]
    except KeyError:
        raise UnknownAgentType(agent_type) from None
    return import_string(path)  # type: ignore[no-any-return]
