"""Small executors for demos and tests: echo, sleep, fail, flaky, and a demo scanner."""

from __future__ import annotations

import hashlib
from typing import Any

from agents.executors.base import AgentError, Executor, StepContext


def _number(inputs: dict[str, Any], key: str, default: float) -> float:
    value = inputs.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AgentError(f"input {key!r} must be a number, got {value!r}", permanent=True)
    return float(value)


class EchoExecutor(Executor):
    """Returns its inputs as its output."""

    type = "echo"

    def execute(self, action: str, inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return dict(inputs)


class SleepExecutor(Executor):
    """Sleeps ``seconds`` (default 0.01), then returns how long it slept."""

    type = "sleep"

    def execute(self, action: str, inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        seconds = _number(inputs, "seconds", 0.01)
        ctx.sleep(seconds)
        return {"slept": seconds}


class FailExecutor(Executor):
    """Always fails with ``message``; ``permanent: true`` makes the failure skip retries."""

    type = "fail"

    def execute(self, action: str, inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        raise AgentError(str(inputs.get("message", "failed on purpose")), permanent=bool(inputs.get("permanent")))


class FlakyExecutor(Executor):
    """Fails its first ``fail_times`` attempts (default 1), then succeeds."""

    type = "flaky"

    def execute(self, action: str, inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        fail_times = int(_number(inputs, "fail_times", 1))
        if ctx.attempt <= fail_times:
            raise AgentError(f"flaky failure on attempt {ctx.attempt} of the first {fail_times}")
        return {"succeeded_on_attempt": ctx.attempt}


class ScannerExecutor(Executor):
    """A demo scanner: derives deterministic findings from the target so demos are repeatable."""

    type = "scanner"

    def execute(self, action: str, inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        target = str(inputs.get("target") or "localhost")
        digest = hashlib.sha256(target.encode()).digest()
        severities = ("low", "medium", "high")
        findings = [
            {"id": f"CC-{digest[i]:03d}", "severity": severities[digest[i] % 3], "target": target}
            for i in range(1 + digest[0] % 3)
        ]
        return {"target": target, "findings": findings, "count": len(findings)}
