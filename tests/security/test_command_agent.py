"""The command agent runs only allowlisted programs, whatever its config's env says."""

from __future__ import annotations

import json
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from agents.executors import executor_class
from agents.executors.base import AgentError, StepContext
from agents.models import Agent

pytestmark = pytest.mark.django_db


def ctx() -> StepContext:
    return StepContext(run_id="r", workflow="w", step_key="s", attempt=1, deadline=time.monotonic() + 20)


@pytest.fixture
def impostor(tmp_path: Path) -> Path:
    """A directory with a program called ``cat`` of its own, which leaves a mark when it runs."""
    mark = tmp_path / "ran"
    program = tmp_path / "bin" / "cat"
    program.parent.mkdir()
    program.write_text(f"#!/bin/sh\ntouch {mark}\necho '{{\"impostor\": true}}'\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def test_the_agents_path_cannot_swap_an_allowlisted_program(impostor: Path, settings: Any) -> None:
    settings.COMMAND_AGENT_ALLOWLIST = ["cat"]
    agent = executor_class("command")({"command": ["cat"], "env": {"PATH": str(impostor / "bin")}})
    with pytest.raises(AgentError, match="env: PATH may not be set") as refused:
        agent.execute("scan", {"x": 1}, ctx())
    assert refused.value.permanent
    assert not (impostor / "ran").exists()


@pytest.mark.parametrize(
    "name",
    ["LD_PRELOAD", "LD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES", "PYTHONPATH", "PYTHONSTARTUP", "BASH_ENV", "path"],
)
def test_variables_that_choose_what_runs_are_refused_in_the_env(name: str, settings: Any) -> None:
    settings.COMMAND_AGENT_ALLOWLIST = ["cat"]
    problems = executor_class("command").validate_config({"command": ["cat"], "env": {name: "/tmp/x"}})
    assert problems == [
        f"env: {name} may not be set: it decides which program or code runs "
        "(PATH, LD_*, DYLD_*, PYTHON*, interpreter and shell start-up variables are refused)"
    ]


def test_the_allowlist_is_checked_by_resolved_path_not_by_name(impostor: Path, settings: Any) -> None:
    settings.COMMAND_AGENT_ALLOWLIST = ["cat"]
    problems = executor_class("command").validate_config({"command": [str(impostor / "bin" / "cat")]})
    assert problems == [
        f"command: '{impostor}/bin/cat' is not in COMMAND_AGENT_ALLOWLIST (it resolves to {impostor}/bin/cat)"
    ]
    assert (
        executor_class("command")
        .validate_config({"command": ["bin/cat"]})[0]
        .startswith("command: 'bin/cat' is not in COMMAND_AGENT_ALLOWLIST (no such executable here")
    )


def test_an_allowlisted_program_runs_with_ordinary_env(settings: Any) -> None:
    settings.COMMAND_AGENT_ALLOWLIST = ["cat"]
    agent = executor_class("command")({"command": ["cat"], "env": {"GREETING": "hello", "RETRIES": 3}})
    assert agent.execute("scan", {"x": 1}, ctx()) == {"action": "scan", "inputs": {"x": 1}}  # cat echoes stdin


def test_sync_stores_the_program_as_the_absolute_path_it_checked(tmp_path: Path, settings: Any) -> None:
    settings.COMMAND_AGENT_ALLOWLIST = ["cat"]
    agents = {"agents": [{"slug": "catter", "type": "command", "config": {"command": ["cat", "-u"]}}]}
    (tmp_path / "agents.yaml").write_text(json.dumps(agents))
    call_command("sync_workflows", str(tmp_path), verbosity=0)
    assert Agent.objects.get(slug="catter").config == {"command": [shutil.which("cat"), "-u"]}


def test_sync_refuses_an_agent_whose_env_sets_path(impostor: Path, tmp_path: Path, settings: Any) -> None:
    settings.COMMAND_AGENT_ALLOWLIST = ["cat"]
    config = {"command": ["cat"], "env": {"PATH": str(impostor / "bin")}}
    (tmp_path / "agents.yaml").write_text(
        json.dumps({"agents": [{"slug": "swap", "type": "command", "config": config}]})
    )
    with pytest.raises(CommandError, match="agent 'swap': config env: PATH may not be set"):
        call_command("sync_workflows", str(tmp_path / "agents.yaml"), verbosity=0)
    assert not Agent.objects.filter(slug="swap").exists()
