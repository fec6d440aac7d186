"""Outgoing requests: the private-address guard (SSRF), DNS pinning, Retry-After, and the command allowlist."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from django.test import override_settings

from agents import http
from agents.executors import executor_class
from agents.executors.base import AgentError, StepContext

PRIVATE_URLS = [
    "http://127.0.0.1:8080/hook",
    "http://10.1.2.3/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:9002/admin/",
    "http://localhost:9002/",
    "http://0.0.0.0/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://[fe80::1]/",
    "http://100.64.0.1/",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://127.1/",
]


def ctx(seconds: float = 5.0) -> StepContext:
    return StepContext(run_id="r", workflow="w", step_key="s", attempt=1, deadline=time.monotonic() + seconds)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    """Records what would leave the machine; nothing does, even if the guard failed."""
    requests: list[httpx.Request] = []

    def fake(request: httpx.Request, *, timeout: float) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={})

    monkeypatch.setattr(http, "send", fake)
    return requests


@pytest.fixture
def guarded() -> Any:
    with override_settings(HTTP_ALLOW_PRIVATE_ADDRESSES=False):
        yield


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_the_wrapper_refuses_private_destinations(url: str, guarded: None, sent: list[httpx.Request]) -> None:
    with pytest.raises(http.TransportError, match="non-public address") as exc:
        http.request("GET", url)
    assert exc.value.permanent
    assert sent == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1/", "ftp://example.com/", "http:///x"])
def test_the_wrapper_refuses_other_schemes(url: str, guarded: None, sent: list[httpx.Request]) -> None:
    with pytest.raises(http.TransportError, match="only http"):
        http.request("GET", url)
    assert sent == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://169.254.169.254/", "http://localhost/"])
def test_the_http_agent_fails_permanently_on_a_private_destination(
    url: str, guarded: None, sent: list[httpx.Request]
) -> None:
    with pytest.raises(AgentError, match="non-public address") as exc:
        executor_class("http")({"url": url}).execute("", {}, ctx())
    assert exc.value.permanent and sent == []


@pytest.mark.parametrize("url", ["http://10.0.0.5/hook", "http://169.254.169.254/x", "http://[::1]/x"])
@pytest.mark.django_db
def test_the_notifier_fails_permanently_on_a_private_destination_without_leaking_the_url(
    url: str, guarded: None, sent: list[httpx.Request]
) -> None:
    secret_url = url + "/T000SECRETPATH"
    with pytest.raises(AgentError) as exc:
        executor_class("notifier")({"channel": "webhook", "url": secret_url}).execute(
            "",
            {"message": "hello"},
            StepContext(
                run_id="00000000-0000-4000-8000-000000000001", workflow="w", step_key="s", attempt=1, deadline=1e12
            ),
        )
    assert exc.value.permanent and sent == []
    assert "non-public" in str(exc.value) and "SECRETPATH" not in str(exc.value)


def test_a_hostname_is_checked_by_every_address_it_resolves_to(
    guarded: None, sent: list[httpx.Request], monkeypatch: pytest.MonkeyPatch
) -> None:
    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 443)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(http.TransportError, match="10.0.0.7"):
        http.request("GET", "https://mixed.example.test/")
    assert sent == []


def test_the_request_is_pinned_to_the_address_that_was_checked(
    guarded: None, sent: list[httpx.Request], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["93.184.216.34", "127.0.0.1"])  # a rebinding resolver: public first, loopback after

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), 443))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    http.request("GET", "https://rebind.example.test/x")
    assert sent[0].extensions[http.PINNED_ADDRESSES] == ["93.184.216.34"]
    assert sent[0].url.host == "rebind.example.test"


class Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        Recorder.seen.append({"host": self.headers["Host"], "path": self.path})
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_pinned_transport_connects_to_the_checked_address_and_keeps_the_host_name() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        request = httpx.Request("GET", f"http://service.invalid:{port}/probe")
        request.extensions[http.PINNED_ADDRESSES] = ["127.0.0.1"]
        response = http.send(request, timeout=10)  # service.invalid never resolves: the pin is what connects
        assert response.json() == {"ok": True}
        assert Recorder.seen[-1] == {"host": f"service.invalid:{port}", "path": "/probe"}
        assert request.url.host == "service.invalid"
    finally:
        server.shutdown()
        server.server_close()


# Retry-After --------------------------------------------------------------------------------------------


class Script:
    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.count = 0

    def __call__(self, request: httpx.Request, *, timeout: float) -> httpx.Response:
        self.count += 1
        return self.responses.pop(0)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(http.time, "sleep", slept.append)
    return slept


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(status: int, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    script = Script(httpx.Response(status, headers={"Retry-After": "3"}), httpx.Response(200, json={}))
    monkeypatch.setattr(http, "send", script)
    http.request("GET", "https://api.example.test/", retries=2, deadline=time.monotonic() + 30)
    assert sleeps == [3.0] and script.count == 2


def test_retry_after_as_an_http_date(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    from datetime import timedelta
    from email.utils import format_datetime

    from django.utils import timezone

    when = format_datetime(timezone.now() + timedelta(seconds=5), usegmt=True)
    script = Script(httpx.Response(503, headers={"Retry-After": when}), httpx.Response(200, json={}))
    monkeypatch.setattr(http, "send", script)
    http.request("GET", "https://api.example.test/", retries=1, deadline=time.monotonic() + 30)
    assert 3.0 <= sleeps[0] <= 5.0


def test_retry_after_past_the_deadline_fails_at_once(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "120"}), httpx.Response(200, json={}))
    monkeypatch.setattr(http, "send", script)
    with pytest.raises(http.TransportError, match="retry after 120s, past the step deadline") as exc:
        http.request("GET", "https://api.example.test/", retries=3, deadline=time.monotonic() + 10)
    assert sleeps == [] and script.count == 1 and exc.value.status == 429 and not exc.value.permanent


def test_retry_after_without_a_deadline_is_capped(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    script = Script(httpx.Response(503, headers={"Retry-After": "86400"}), httpx.Response(200, json={}))
    monkeypatch.setattr(http, "send", script)
    http.request("GET", "https://api.example.test/", retries=1)
    assert sleeps == [http.RETRY_AFTER_MAX_SECONDS]


def test_a_garbled_retry_after_falls_back_to_the_backoff(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "soon"}), httpx.Response(200, json={}))
    monkeypatch.setattr(http, "send", script)
    http.request("GET", "https://api.example.test/", retries=1, deadline=time.monotonic() + 30)
    assert sleeps == [0.2]


# The command agent -------------------------------------------------------------------------------------


@override_settings(COMMAND_AGENT_ALLOWLIST=["/bin/cat"])
@pytest.mark.parametrize(
    "argv",
    [["/bin/sh", "-c", "id"], ["cat"], ["/usr/bin/cat"], ["/bin/cat/../sh"], ["bash", "-c", "echo {}"], ["/bin/Cat"]],
)
def test_the_command_agent_runs_only_allowlisted_programs(argv: list[str], tmp_path: Any) -> None:
    marker = tmp_path / "ran"
    executor = executor_class("command")({"command": [*argv, str(marker)]})
    assert any("COMMAND_AGENT_ALLOWLIST" in p for p in executor.validate_config(executor.config))
    with pytest.raises(AgentError, match="not in COMMAND_AGENT_ALLOWLIST") as exc:
        executor.execute("", {}, ctx())
    assert exc.value.permanent and not marker.exists()


@override_settings(COMMAND_AGENT_ALLOWLIST=["/bin/cat"])
def test_an_allowlisted_program_runs() -> None:
    out = executor_class("command")({"command": ["/bin/cat"]}).execute("act", {"x": 1}, ctx())
    assert out == {"action": "act", "inputs": {"x": 1}}


@override_settings(COMMAND_AGENT_ALLOWLIST=[])
def test_an_empty_allowlist_runs_nothing() -> None:
    with pytest.raises(AgentError, match="not in COMMAND_AGENT_ALLOWLIST"):
        executor_class("command")({"command": ["/bin/true"]}).execute("", {}, ctx())
