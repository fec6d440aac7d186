from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from django.conf import settings

from agents.executors.base import AgentError, Executor, StepCancelled, StepContext


class CommandExecutor(Executor):
    """Runs an allowlisted command: the inputs as JSON on stdin, a JSON object expected on stdout.

    Config: ``command`` (argv list; the program must be in COMMAND_AGENT_ALLOWLIST), ``env`` (extra
    environment). A non-zero exit fails the attempt with the tail of stderr; the process is killed at the
    step's deadline or when the attempt is cancelled.
    """

    type = "command"
    secret_keys = frozenset({"env"})

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        command = config.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
            return ["command: must be a non-empty list of strings (argv)"]
        if command[0] not in settings.COMMAND_AGENT_ALLOWLIST:
            return [f"command: {command[0]!r} is not in COMMAND_AGENT_ALLOWLIST"]
        return []

    def execute(self, action: str, inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        problems = self.validate_config(self.config)
        if problems:
            raise AgentError("; ".join(problems), permanent=True)
        env = {**os.environ, **{str(k): str(v) for k, v in self.config.get("env", {}).items()}}
        payload = json.dumps({"action": action, "inputs": inputs}).encode()
        proc = subprocess.Popen(
            self.config["command"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            stdout, stderr = _communicate(proc, payload, ctx)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            tail = stderr.decode(errors="replace").strip()[-500:]
            raise AgentError(f"command exited with status {proc.returncode}: {tail}")
        try:
            result = json.loads(stdout or b"{}")
        except json.JSONDecodeError as exc:
            raise AgentError(f"command output is not JSON: {exc}", permanent=True) from exc
        if not isinstance(result, dict):
            raise AgentError("command output must be a JSON object", permanent=True)
        return result


def _communicate(proc: subprocess.Popen[bytes], payload: bytes, ctx: StepContext) -> tuple[bytes, bytes]:
    # Poll in short slices so a cancelled attempt kills the child promptly.
    first = True
    while True:
        try:
            return proc.communicate(payload if first else None, timeout=min(0.5, max(ctx.remaining(), 0.01)))
        except subprocess.TimeoutExpired:
            first = False
            if ctx.cancelled.is_set():
                raise StepCancelled("command cancelled") from None
            if ctx.remaining() <= 0:
                raise AgentError("command did not finish before the step deadline") from None
