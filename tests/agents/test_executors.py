"""Built-in executors: http through the outgoing wrapper, command, python."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx
import pytest

from agents import http
from agents.executors import UnknownAgentType, executor_class
from agents.executors.base import AgentError, StepContext


def ctx(seconds: float = 5.0, attempt: int = 1) -> StepContext:
    return StepContext(run_id="r", workflow="w", step_key="s", attempt=attempt, deadline=time.monotonic() + seconds)


class FakeRemote:
    """Stands in for remote HTTP services at the one outgoing boundary."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request, *, timeout: float) -> httpx.Response:
        self.requests.append(request)
        item = self.responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(*responses: httpx.Response | Exception) -> FakeRemote:
        fake = FakeRemote(*responses)
        monkeypatch.setattr(http, "send", fake)
        return fake

    return install


def test_http_posts_json_and_returns_the_json_answer(remote: Any) -> None:
    fake = remote(httpx.Response(200, json={"ok": True}))
    executor = executor_class("http")({"url": "https://hooks.example.test/x", "headers": {"X-Key": "k"}})
    out = executor.execute("", {"json": {"a": 1}}, ctx())
    assert out == {"status": 200, "body": {"ok": True}}
    sent = fake.requests[0]
    assert sent.method == "POST" and json.loads(sent.content) == {"a": 1} and sent.headers["X-Key"] == "k"


def test_http_4xx_is_permanent_and_5xx_is_retried_then_transient(remote: Any) -> None:
    remote(httpx.Response(404, text="no such hook"))
    with pytest.raises(AgentError, match="answered 404: no such hook") as exc:
        executor_class("http")({"url": "https://x.example.test"}).execute("", {}, ctx())
    assert exc.value.permanent
    fake = remote(httpx.Response(503), httpx.Response(502), httpx.Response(200, json={}))
    out = executor_class("http")({"url": "https://x.example.test", "retries": 2}).execute("", {}, ctx())
    assert out["status"] == 200 and len(fake.requests) == 3
    remote(httpx.ConnectError("refused"))
    with pytest.raises(AgentError, match="ConnectError") as exc:
        executor_class("http")({"url": "https://x.example.test"}).execute("", {}, ctx())
    assert not exc.value.permanent


def test_http_refuses_private_addresses_unless_allowed(settings: Any) -> None:
    settings.HTTP_ALLOW_PRIVATE_ADDRESSES = False
    with pytest.raises(AgentError, match="non-public address 127.0.0.1") as exc:
        executor_class("http")({"url": "http://127.0.0.1:9/x"}).execute("", {}, ctx())
    assert exc.value.permanent
    with pytest.raises(AgentError, match="only http"):
        executor_class("http")({"url": "file:///etc/passwd"}).execute("", {}, ctx())


def test_command_runs_an_allowlisted_program_with_json_in_and_out(settings: Any) -> None:
    settings.COMMAND_AGENT_ALLOWLIST = [sys.executable]
    script = "import json,sys; d=json.load(sys.stdin); print(json.dumps({'got': d['inputs'], 'action': d['action']}))"
    out = executor_class("command")({"command": [sys.executable, "-c", script]}).execute("scan", {"x": 1}, ctx())
    assert out == {"got": {"x": 1}, "action": "scan"}


def test_command_failures_are_clear(settings: Any) -> None:
    settings.COMMAND_AGENT_ALLOWLIST = [sys.executable]
    failing = executor_class("command")(
        {"command": [sys.executable, "-c", "import sys; sys.stderr.write('bad disk'); sys.exit(3)"]}
    )
    with pytest.raises(AgentError, match="exited with status 3: bad disk"):
        failing.execute("", {}, ctx())
    slow = executor_class("command")({"command": [sys.executable, "-c", "import time; time.sleep(30)"]})
    started = time.monotonic()
    with pytest.raises(AgentError, match="did not finish before the step deadline"):
        slow.execute("", {}, ctx(seconds=0.5))
    assert time.monotonic() - started < 5
    with pytest.raises(AgentError, match="'/bin/sh' is not in COMMAND_AGENT_ALLOWLIST"):
        executor_class("command")({"command": ["/bin/sh", "-c", "true"]}).execute("", {}, ctx())


def test_python_calls_allowlisted_callables_only() -> None:
    out = executor_class("python")({"callable": "agents.demo.summarise"}).execute(
        "", {"findings": [{"severity": "high"}, {"severity": "low"}, {"severity": "high"}]}, ctx()
    )
    assert out == {"by_severity": {"high": 2, "low": 1}, "total": 3}
    with pytest.raises(AgentError, match="outside PYTHON_AGENT_ALLOWED_MODULES"):
        executor_class("python")({"callable": "os.system"}).execute("", {}, ctx())


def test_builtins_and_the_registry() -> None:
    assert executor_class("echo")({}).execute("", {"a": 1}, ctx()) == {"a": 1}
    with pytest.raises(AgentError, match="attempt 1 of the first 2"):
        executor_class("flaky")({}).execute("", {"fail_times": 2}, ctx(attempt=1))
    assert executor_class("flaky")({}).execute("", {"fail_times": 2}, ctx(attempt=3)) == {"succeeded_on_attempt": 3}
    scan = executor_class("scanner")({}).execute("", {"target": "db01"}, ctx())
    assert scan == executor_class("scanner")({}).execute("", {"target": "db01"}, ctx()) and scan["count"] >= 1
    with pytest.raises(UnknownAgentType, match="unknown agent type 'nope'"):
        executor_class("nope")
