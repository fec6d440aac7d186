"""A redirect is not a delivery: notifiers and the http agent fail on 3xx unless the agent allows following it,
and then only to destinations the outgoing guard allows. Real HTTP servers on the loopback answer."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import override_settings

from agents.executors import executor_class
from agents.executors.base import AgentError, StepContext
from agents.models import Agent
from tests.conftest import finish
from workflows.models import RunStatus, Workflow, WorkflowNode
from workflows.services import trigger_workflow


class Server:
    """Answers every request from ``routes`` (path -> status, headers, body) and records (method, path, body)."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.routes = routes
        self.received: list[tuple[str, str, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.received.append((self.command, self.path, body))
                status, headers, answer = server.routes.get(self.path, (404, {}, b"no such path"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value.replace("{port}", str(server.port)))
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[Server]:
    found = Server(
        {
            "/away": (302, {"Location": "https://elsewhere.example/collect?key=secret"}, b""),
            "/here": (302, {"Location": "/final"}, b""),
            "/keep": (307, {"Location": "/final"}, b""),
            "/twice": (302, {"Location": "/here"}, b""),
            "/inside": (302, {"Location": "http://10.20.30.40/metadata"}, b""),
            "/final": (200, {"Content-Type": "application/json"}, b'{"ok": true}'),
        }
    )
    yield found
    found.httpd.shutdown()


def ctx() -> StepContext:
    return StepContext(run_id=str(uuid.uuid4()), workflow="w", step_key="s", attempt=1, deadline=time.monotonic() + 10)


def notify(config: dict[str, Any]) -> dict[str, Any]:
    return executor_class("notifier")(config).execute("send", {"message": "disk full"}, ctx())


@pytest.mark.django_db
@pytest.mark.parametrize("channel", ["webhook", "slack", "discord"])
def test_a_notifier_answered_with_a_redirect_has_not_delivered(server: Server, channel: str) -> None:
    with pytest.raises(AgentError) as failed:
        notify({"channel": channel, "url": server.url("/away"), "retries": 2})
    assert failed.value.permanent
    message = str(failed.value)
    assert "answered 302, a redirect to elsewhere.example" in message and "not delivered" in message
    assert "secret" not in message and "/away" not in message  # the webhook URL and the target's path are secrets
    assert len(server.received) == 1  # a permanent failure: not retried


def test_the_http_agent_fails_on_a_redirect_by_default(server: Server) -> None:
    agent = executor_class("http")({"url": server.url("/here"), "method": "POST"})
    with pytest.raises(AgentError, match="answered 302, a redirect to 127.0.0.1: not delivered") as failed:
        agent.execute("", {"json": {"a": 1}}, ctx())
    assert failed.value.permanent
    assert [path for _, path, _ in server.received] == ["/here"]


def test_the_http_agent_follows_as_many_redirects_as_it_allows(server: Server) -> None:
    agent = executor_class("http")({"url": server.url("/twice"), "method": "POST", "max_redirects": 2})
    assert agent.execute("", {"json": {"a": 1}}, ctx()) == {"status": 200, "body": {"ok": True}}
    # 302 turns the POST into a GET, as browsers do; 307 keeps the method and the body.
    assert server.received == [("POST", "/twice", b'{"a":1}'), ("GET", "/here", b""), ("GET", "/final", b"")]
    server.received.clear()
    agent = executor_class("http")({"url": server.url("/keep"), "method": "POST", "max_redirects": 1})
    assert agent.execute("", {"json": {"a": 1}}, ctx())["status"] == 200
    assert server.received == [("POST", "/keep", b'{"a":1}'), ("POST", "/final", b'{"a":1}')]
    with pytest.raises(AgentError, match="answered 302, a redirect to 127.0.0.1 after following 1"):
        executor_class("http")({"url": server.url("/twice"), "max_redirects": 1}).execute("", {}, ctx())


def test_a_followed_redirect_meets_the_same_guard_as_the_url(server: Server) -> None:
    agent = executor_class("http")({"url": server.url("/inside"), "method": "GET", "max_redirects": 3})
    with (
        override_settings(HTTP_ALLOW_PRIVATE_ADDRESSES=False, HTTP_ALLOWED_PRIVATE_NETWORKS=_only_loopback()),
        pytest.raises(AgentError, match="refusing '10.20.30.40': it resolves to the non-public address") as refused,
    ):
        agent.execute("", {}, ctx())
    assert refused.value.permanent
    assert [path for _, path, _ in server.received] == ["/inside"]


def _only_loopback() -> Any:
    from config.env import parse_allowlist

    return parse_allowlist("HTTP_ALLOWED_PRIVATE_NETWORKS", "127.0.0.1")


@pytest.mark.django_db
def test_a_run_whose_notifier_is_redirected_fails_instead_of_reporting_delivery(server: Server, synced: None) -> None:
    agent = Agent.objects.create(
        slug="redirected", type="notifier", config={"channel": "webhook", "url": server.url("/away")}
    )
    workflow = Workflow.objects.create(slug="redirected", name="Redirected")
    WorkflowNode.objects.create(workflow=workflow, key="notify", agent=agent, inputs={"message": "disk full"})
    run = finish(trigger_workflow(workflow, context={})[0])
    assert run.status == RunStatus.FAILED
    attempt = run.attempts.get()
    assert attempt.output is None and "a redirect to elsewhere.example" in attempt.error_message


@pytest.mark.parametrize("value", [-1, 11, "2", True])
def test_max_redirects_must_be_a_small_whole_number(value: Any) -> None:
    problems = executor_class("http").validate_config({"url": "https://x.example", "max_redirects": value})
    assert problems == [f"max_redirects: must be a whole number from 0 to 10, not {value!r}"]
    assert executor_class("notifier").validate_config(
        {"channel": "webhook", "url": "https://x", "max_redirects": value}
    )
