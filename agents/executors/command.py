from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

from django.conf import settings

from agents.executors.base import AgentError, Executor, StepCancelled, StepContext

# Variables that decide which program, library or code a process runs (the dynamic loader, interpreters'
# module paths and start-up hooks, shells' start-up files): an agent's env may not set them, or the
# allowlist would mean nothing. Matched without regard to case.
_REFUSED_ENV = re.compile(
    r"^(PATH|IFS|ENV|BASH_ENV|BASH_FUNC_.*|SHELLOPTS|BASHOPTS|PS4|PROMPT_COMMAND|CDPATH"
    r"|LD_.*|DYLD_.*|GCONV_PATH|LOCPATH|NLSPATH|GLIBC_TUNABLES|HOSTALIASES|MALLOC_.*|OPENSSL_CONF|OPENSSL_ENGINES"
    r"|PYTHON.*|PERL5?LIB|PERL5OPT|PERLIO|RUBY.*|GEM_.*|BUNDLE_.*|NODE_OPTIONS|NODE_PATH|LUA_C?PATH.*|TCLLIBPATH"
    r"|CLASSPATH|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|JDK_JAVA_OPTIONS|GIT_.*)$",
    re.IGNORECASE,
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def resolve(program: str) -> str | None:
    """The absolute path of ``program`` as this process finds it, or None when there is no such executable.

    An absolute path is taken as it is; a bare name is looked up on this process's own PATH, never on the
    PATH an agent's env would give the child. A relative path is refused: it would depend on the directory.
    """
    if os.path.isabs(program):
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    if "/" in program or not program:
        return None
    return shutil.which(program, path=os.environ.get("PATH", os.defpath))


def allowlisted(path: str) -> bool:
    """Whether the resolved ``path`` is the resolved path of one of COMMAND_AGENT_ALLOWLIST's entries (names
    or absolute paths). Paths are compared as paths, not as the files they lead to: a multi-call binary
    (busybox) behaves by the name it is run under."""
    wanted = os.path.normpath(path)
    return any(
        (allowed := resolve(str(entry))) is not None and os.path.normpath(allowed) == wanted
        for entry in settings.COMMAND_AGENT_ALLOWLIST
    )


class CommandExecutor(Executor):
    """Runs an allowlisted command: the inputs as JSON on stdin, a JSON object expected on stdout.

    Config: ``command`` (argv list; the program must be in COMMAND_AGENT_ALLOWLIST), ``env`` (extra
    environment, never variables that choose what runs, such as PATH, LD_* or PYTHON*). The program is resolved
    to an absolute path when the definition is synced and checked against the allowlist, whose entries are
    resolved the same way, by that path; the worker runs that path, checked again. A non-zero exit fails the
    attempt with the tail of stderr; the process is killed at the step's deadline or when the attempt is
    cancelled.
    """

    type = "command"
    secret_keys = frozenset({"env"})

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> list[str]:
        command = config.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
            return ["command: must be a non-empty list of strings (argv)"]
        problems = []
        if any("\x00" in arg for arg in command):
            problems.append("command: an argument holds a NUL character")
        program = resolve(command[0])
        if program is None:
            problems.append(
                f"command: {command[0]!r} is not in COMMAND_AGENT_ALLOWLIST (no such executable here: give an "
                "allowlisted name, looked up on the worker's PATH, or an absolute path)"
            )
        elif not allowlisted(program):
            problems.append(f"command: {command[0]!r} is not in COMMAND_AGENT_ALLOWLIST (it resolves to {program})")
        return problems + _env_problems(config.get("env", {}))

    @classmethod
    def normalise_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        program = resolve(config["command"][0])
        assert program is not None  # validated first
        return {**config, "command": [program, *config["command"][1:]]}

    def execute(self, action: str, inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        problems = self.validate_config(self.config)
        if problems:
            raise AgentError("; ".join(problems), permanent=True)
        program = resolve(self.config["command"][0])
        assert program is not None  # validated above
        env = {**os.environ, **{str(k): str(v) for k, v in self.config.get("env", {}).items()}}
        payload = json.dumps({"action": action, "inputs": inputs}).encode()
        proc = subprocess.Popen(
            [program, *self.config["command"][1:]],
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


def _env_problems(env: Any) -> list[str]:
    if not isinstance(env, dict):
        return ["env: must be a mapping of variable name to value"]
    problems = []
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            problems.append(f"env: {name!r} is not a variable name")
        elif _REFUSED_ENV.match(name):
            problems.append(
                f"env: {name} may not be set: it decides which program or code runs "
                "(PATH, LD_*, DYLD_*, PYTHON*, interpreter and shell start-up variables are refused)"
            )
        if isinstance(value, bool | dict | list) or value is None or "\x00" in str(value):
            problems.append(f"env: {name}'s value must be a string or a number without NUL characters")
    return problems


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
