"""A notifier's webhook URL is a secret: it reaches the remote service and nowhere else.

The notifier runs in a process of its own, set up as the service sets itself up (manage.py: LOGGING, the
OpenTelemetry bootstrap with the httpx instrumentation, OTLP export to a receiver in this process), and
delivers to a loopback server; its stdout, its spans and its exported logs are then searched for the secret.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings

from tests.alerts.conftest import Loopback
from tests.observability.procs import service_env
from tests.observability.receiver import Receiver, Span

pytestmark = pytest.mark.slow

TOKEN = "XyZsEcReT0ken42"
PATHS = {
    "slack": f"/services/T000/B000/{TOKEN}",
    "discord": f"/api/webhooks/1/{TOKEN}",
    "webhook": f"/hooks/{TOKEN}?key={TOKEN}",
    "gone": f"/services/T000/B999/{TOKEN}",
}

SCRIPT = """
import logging, time
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from agents.executors.base import AgentError, StepContext
from agents.executors.notifier import NotifierExecutor

tracer = trace.get_tracer("tests")
ctx = StepContext(run_id="00000000-0000-4000-8000-00000000abcd", workflow="w", step_key="s", attempt=1,
                  deadline=time.monotonic() + 30)
with tracer.start_as_current_span("notify", kind=SpanKind.SERVER):
    for channel in ("slack", "discord", "webhook"):
        config = {"channel": channel, "url_env": f"LEAK_{channel.upper()}_URL", "secret": "signing-key"}
        NotifierExecutor(config).execute("send", {"message": "disk full"}, ctx)
    try:
        with tracer.start_as_current_span("agent.execute"):
            NotifierExecutor({"channel": "slack", "url_env": "LEAK_GONE_URL"}).execute("send", {"message": "x"}, ctx)
    except AgentError as exc:
        logging.getLogger("agents").warning("delivery failed: %s", exc, exc_info=True)
"""


def httpx_spans(receiver: Receiver) -> list[Span]:
    return [s for s in receiver.spans() if s.scope == "opentelemetry.instrumentation.httpx"]


def run_notifier(receiver: Receiver, loopback: Loopback, **extra: str) -> str:
    env = service_env(
        DEBUG="0",
        SECRET_KEY="x" * 50,
        WEBHOOK_TOKEN="secret-urls-webhook-token",
        LOG_LEVEL="info",
        HTTP_ALLOW_PRIVATE_ADDRESSES="false",
        HTTP_ALLOWED_PRIVATE_NETWORKS="127.0.0.1",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_TRACES_SAMPLER_ARG="1",  # every HTTP call a span (by default, those of a tenth of the traces)
        **{f"LEAK_{name.upper()}_URL": loopback.url(path) for name, path in PATHS.items()},
        **extra,
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SCRIPT],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.mark.parametrize("semconv", ["", "http/dup"])
def test_webhook_urls_appear_in_no_log_span_or_error(semconv: str, loopback: Loopback, db: None) -> None:
    loopback.answer(503, b"busy")  # Slack's first try: retried
    for _ in range(3):
        loopback.answer(200, b"ok")
    loopback.answer(404, f"no_service: {PATHS['gone']}".encode())  # an answer that echoes the URL
    receiver = Receiver().start()
    try:
        output = run_notifier(receiver, loopback, OTEL_SEMCONV_STABILITY_OPT_IN=semconv)
        receiver.wait_for("the five HTTP client spans", lambda: len(httpx_spans(receiver)) == 5)
        failure_logs = receiver.wait_for(
            "the failure's log record", lambda: [r for r in receiver.logs() if "delivery failed" in str(r.body)]
        )
    finally:
        receiver.stop()

    # The secret was used: every request reached its real path.
    sent = [PATHS["slack"], PATHS["slack"], PATHS["discord"], PATHS["webhook"], PATHS["gone"]]
    assert [r.path for r in loopback.received] == sent

    # ... and shown nowhere: not on stdout, in no span (attributes, events, names), in no exported log.
    assert "delivery failed" in output and "404" in output
    assert TOKEN not in output and "B000" not in output and "B999" not in output
    assert "HTTP Request:" not in output  # httpx's own INFO line
    assert TOKEN not in repr(receiver.spans()) and "B999" not in repr(receiver.spans())
    assert TOKEN not in repr(receiver.logs())
    assert "delivery failed" in str(failure_logs[0].body) and "127.0.0.1" in str(failure_logs[0].body)

    # The client spans keep the destination (scheme, host, port) and its answers, without the path.
    spans = httpx_spans(receiver)
    redacted = f"http://127.0.0.1:{loopback.port}/REDACTED"
    keys = ["http.url", "url.full"] if semconv else ["http.url"]
    assert [[s.attributes.get(key) for key in keys] for s in spans] == [[redacted] * len(keys)] * 5
    statuses = sorted(s.attributes.get("http.status_code") or s.attributes["http.response.status_code"] for s in spans)
    assert statuses == [200, 200, 200, 404, 503]
    failed = next(s for s in receiver.spans() if s.name == "agent.execute")
    assert any(name == "exception" and "slack: delivery failed" in str(attrs) for name, attrs in failed.events)
