"""Outgoing requests: the private-address guard (SSRF) and its allowlist, DNS pinning, Retry-After, and the
command allowlist."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from agents import http
from agents.executors import executor_class
from agents.executors.base import AgentError, StepContext
from config.env import envallowlist, parse_allowlist

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


# The allowlist of private destinations ----------------------------------------------------------------


def allowing(raw: str) -> Any:
    """The guard on, with HTTP_ALLOWED_PRIVATE_NETWORKS parsed from ``raw`` as the settings parse it."""
    return override_settings(
        HTTP_ALLOW_PRIVATE_ADDRESSES=False,
        HTTP_ALLOWED_PRIVATE_NETWORKS=parse_allowlist("HTTP_ALLOWED_PRIVATE_NETWORKS", raw),
    )


def resolving(monkeypatch: pytest.MonkeyPatch, names: dict[str, str]) -> None:
    """DNS answers for made-up host names; everything else resolves as usual."""
    real = socket.getaddrinfo

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host in names:
            family = socket.AF_INET6 if ":" in names[host] else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (names[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


def test_an_allowlisted_network_opens_that_network_and_nothing_else(sent: list[httpx.Request]) -> None:
    with allowing("10.20.0.0/16, 10.30.1.7"):
        http.request("POST", "http://10.20.4.5:8080/hook")
        http.request("POST", "http://10.30.1.7/hook")
        http.request("POST", "http://[::ffff:10.20.0.9]/hook")  # the same address, IPv4-mapped
        for url in ("http://10.21.0.1/hook", "http://10.30.1.8/hook", "http://127.0.0.1/", "http://192.168.1.1/"):
            with pytest.raises(http.TransportError, match="non-public address") as exc:
                http.request("POST", url)
            assert exc.value.permanent and "HTTP_ALLOWED_PRIVATE_NETWORKS" in str(exc.value)
    assert [r.extensions[http.PINNED_ADDRESSES] for r in sent] == [["10.20.4.5"], ["10.30.1.7"], ["10.20.0.9"]]


def test_an_allowlisted_host_name_opens_that_host_only(
    sent: list[httpx.Request], monkeypatch: pytest.MonkeyPatch
) -> None:
    resolving(monkeypatch, {"alerts-relay.internal": "10.9.9.9", "other.internal": "10.9.9.9"})
    with allowing("Alerts-Relay.Internal"):
        http.request("POST", "http://alerts-relay.internal:9000/hook")
        with pytest.raises(http.TransportError, match="non-public address 10.9.9.9"):
            http.request("POST", "http://other.internal:9000/hook")
    assert len(sent) == 1 and sent[0].url.host == "alerts-relay.internal"
    assert sent[0].extensions[http.PINNED_ADDRESSES] == ["10.9.9.9"]


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.10.1/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[fe80::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0:9002/",
        "http://metadata.internal/computeMetadata/v1/",
    ],
)
def test_link_local_and_metadata_addresses_stay_refused_under_a_wide_allowlist(
    url: str, sent: list[httpx.Request], monkeypatch: pytest.MonkeyPatch
) -> None:
    resolving(monkeypatch, {"metadata.internal": "169.254.169.254"})
    with allowing("0.0.0.0/0, ::/0, fd00::/8, metadata.internal"), pytest.raises(http.TransportError) as exc:
        http.request("GET", url)
    assert exc.value.permanent and "link-local, metadata or this host" in str(exc.value)
    assert sent == []


def test_a_wide_allowlist_still_opens_the_ordinary_private_addresses(sent: list[httpx.Request]) -> None:
    with allowing("0.0.0.0/0, fd00::/8"):
        http.request("GET", "http://10.1.2.3/")
        http.request("GET", "http://[fd00:1::5]/")
    assert len(sent) == 2


def test_a_metadata_address_opens_only_when_listed_inside_its_own_range(sent: list[httpx.Request]) -> None:
    with allowing("169.254.169.254, fd00:ec2::254"):
        http.request("GET", "http://169.254.169.254/latest/meta-data/")
        http.request("GET", "http://[fd00:ec2::254]/latest/meta-data/")
        with pytest.raises(http.TransportError, match="169.254.169.253"):
            http.request("GET", "http://169.254.169.253/")
    assert len(sent) == 2


def test_the_global_switch_still_opens_every_address(sent: list[httpx.Request]) -> None:
    with override_settings(
        HTTP_ALLOW_PRIVATE_ADDRESSES=True,
        HTTP_ALLOWED_PRIVATE_NETWORKS=parse_allowlist("HTTP_ALLOWED_PRIVATE_NETWORKS", ""),
    ):
        for url in ("http://127.0.0.1:8080/hook", "http://10.1.2.3/", "http://169.254.169.254/"):
            http.request("GET", url)
    assert len(sent) == 3


def test_an_allowlisted_loopback_receiver_gets_the_notification() -> None:
    """The allowlist, not the global switch, lets a real request through to one internal receiver."""
    Recorder.seen.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with allowing("127.0.0.1"):
            response = http.request("GET", f"http://127.0.0.1:{server.server_port}/probe")
        assert response.json() == {"ok": True} and Recorder.seen[-1]["path"] == "/probe"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("10.0.0.5/8", "'10.0.0.5/8' has host bits set (did you mean 10.0.0.0/8?)"),
        ("10.0.0.0/33", "'10.0.0.0/33' is neither an IP network"),
        ("10.0.0.0/8;10.1.0.0/16", "is neither an IP network"),
        ("http://relay.internal/", "'http://relay.internal/' is neither an IP network"),
        ("*.internal", "'*.internal' is neither"),
        ("relay internal", "'relay internal' is neither"),
        ("127.1", "'127.1' is neither"),
        ("2130706433", "'2130706433' is neither"),
        ("fe80::1%eth0", "'fe80::1%eth0' is neither"),
    ],
)
def test_nonsense_in_the_allowlist_is_refused_naming_the_variable(
    raw: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_ALLOWED_PRIVATE_NETWORKS", f"10.20.0.0/16,{raw}")
    with pytest.raises(ImproperlyConfigured) as exc:
        envallowlist("HTTP_ALLOWED_PRIVATE_NETWORKS")
    assert str(exc.value).startswith("HTTP_ALLOWED_PRIVATE_NETWORKS: ") and problem in str(exc.value)


def test_the_allowlist_is_read_at_start_up() -> None:
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup();"
        "from django.conf import settings as s; a = s.HTTP_ALLOWED_PRIVATE_NETWORKS;"
        "print(s.HTTP_ALLOW_PRIVATE_ADDRESSES, sorted(map(str, a.networks)), sorted(a.hosts))"
    )
    env = {"PATH": "/usr/bin:/bin", "SECRET_KEY": "x" * 50, "WEBHOOK_TOKEN": "w", "OTEL_SDK_DISABLED": "true"}

    def start(value: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=settings.BASE_DIR,
            env={**env, "HTTP_ALLOWED_PRIVATE_NETWORKS": value},
            capture_output=True,
            text=True,
            timeout=60,
        )

    good = start("10.20.0.0/16, [fd12::7], alerts-relay.internal")
    assert good.stdout.strip() == "False ['10.20.0.0/16', 'fd12::7/128'] ['alerts-relay.internal']", good.stderr
    bad = start("10.20.0.0/16,not a network")
    assert bad.returncode != 0
    assert "HTTP_ALLOWED_PRIVATE_NETWORKS: 'not a network' is neither an IP network" in bad.stderr


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


# Secret URLs ------------------------------------------------------------------------------------------

SECRET_HOOK = "https://relay:pa55word@hooks.example.test:8443/services/T0/B0/tok3nXYZ?sig=s1gnatureXYZ"


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(404, text="no such hook: /services/T0/B0/tok3nXYZ?sig=s1gnatureXYZ"),
        httpx.Response(500, text=f"upstream failed for {SECRET_HOOK}"),
        httpx.ConnectError(f"cannot connect to {SECRET_HOOK}"),
        httpx.ReadTimeout("timed out reading /services/T0/B0/tok3nXYZ"),
    ],
)
def test_a_secret_url_appears_in_no_error(answer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[httpx.Request] = []

    def remote(request: httpx.Request, *, timeout: float) -> httpx.Response:
        sent.append(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(http, "send", remote)
    with pytest.raises(http.TransportError) as exc:
        http.request("POST", SECRET_HOOK, deadline=time.monotonic() + 10, secret=True)
    message = str(exc.value)
    assert "https://hooks.example.test:8443/REDACTED" in message
    assert not any(part in message for part in ("tok3nXYZ", "s1gnatureXYZ", "pa55word", "/services/"))
    # The request itself is the real one, marked for telemetry to record it redacted.
    assert str(sent[0].url) == SECRET_HOOK and sent[0].extensions[http.REDACT_URL] is True


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://hooks.slack.com/services/T0/B0/x", "https://hooks.slack.com/REDACTED"),
        ("http://user:pw@[fd12::7]:9000/hook?token=x", "http://[fd12::7]:9000/REDACTED"),
        ("not a url", "<url>"),
    ],
)
def test_redact_keeps_only_scheme_host_and_port(url: str, redacted: str) -> None:
    assert http.redact(url) == redacted


def test_a_secret_url_refused_by_the_guard_is_not_shown(guarded: None, sent: list[httpx.Request]) -> None:
    with pytest.raises(http.TransportError) as exc:
        http.request("POST", "gopher://hooks.example.test/services/tok3nXYZ", secret=True)
    assert "tok3nXYZ" not in str(exc.value) and sent == []


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
    assert exc.value.retry_after == 120.0  # for the runner: the step's next attempt waits that long


def test_the_asked_delay_is_carried_when_the_retries_run_out(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    script = Script(
        httpx.Response(503, headers={"Retry-After": "2"}), httpx.Response(503, headers={"Retry-After": "4"})
    )
    monkeypatch.setattr(http, "send", script)
    with pytest.raises(http.TransportError) as exc:
        http.request("GET", "https://api.example.test/", retries=1, deadline=time.monotonic() + 30)
    assert sleeps == [2.0] and exc.value.retry_after == 4.0


def test_the_asked_delay_passed_on_is_at_most_an_hour(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    monkeypatch.setattr(http, "send", Script(httpx.Response(429, headers={"Retry-After": "864000"})))
    with pytest.raises(http.TransportError) as exc:
        http.request("GET", "https://api.example.test/", retries=1, deadline=time.monotonic() + 10)
    assert exc.value.retry_after == http.RETRY_AFTER_STEP_MAX_SECONDS == 3600.0


def test_a_failure_without_retry_after_carries_no_delay(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    monkeypatch.setattr(http, "send", Script(httpx.Response(500)))
    with pytest.raises(http.TransportError) as exc:
        http.request("GET", "https://api.example.test/", deadline=time.monotonic() + 10)
    assert exc.value.retry_after is None


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
