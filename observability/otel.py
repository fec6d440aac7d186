"""OpenTelemetry bootstrap: once per process, from the standard OTEL_* environment variables.

Called by manage.py, config/wsgi.py, config/asgi.py, gunicorn's post_fork hook and the worker command;
only the first call in a process does anything. What it reads:

- OTEL_SDK_DISABLED=true: nothing is set up. The OpenTelemetry API then hands out no-op tracers and
  meters and this project's hooks return at once, so telemetry costs next to nothing and says nothing.
- OTEL_SERVICE_NAME (default ``orchestration-service``) and OTEL_RESOURCE_ATTRIBUTES; the resource also
  carries service.version, deployment.environment (setting DEPLOYMENT_ENVIRONMENT) and
  service.instance.id (host:pid, as in the workers' ids).
- OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER, OTEL_LOGS_EXPORTER: ``otlp``, ``console`` or ``none``
  (metrics also ``prometheus``). Unset, a signal is exported over OTLP when an OTLP endpoint is configured
  (OTEL_EXPORTER_OTLP_ENDPOINT or the signal's own) and not at all otherwise, so a quick start without
  a collector does not log export failures. Trace ids are created either way, for logs and run pages.
- OTEL_EXPORTER_OTLP_PROTOCOL (or the per-signal variable): ``http/protobuf`` (default) or ``grpc``;
  endpoint, headers, timeout and compression are read by the exporters themselves.
- OTEL_TRACES_SAMPLER / _ARG: ``runs`` by default (observability.sampling.RunsSampler: every run's spans and
  every server span recorded, other spans for OTEL_TRACES_SAMPLER_ARG of the traces, default 0.1); the SDK's
  samplers (``parentbased_always_on``, ``traceidratio``...) by name. Client spans without a parent are
  dropped whichever is chosen (QuietRootsSampler).
- OTEL_BSP_*, OTEL_METRIC_EXPORT_INTERVAL, OTEL_BLRP_* as the SDK defines them; metrics are exported every
  15 s unless OTEL_METRIC_EXPORT_INTERVAL says otherwise (the SDK's default is 60 s).
- Every process also reports its resident memory, CPU time and open file descriptors (observability.metrics).

All export happens on background threads, so an unreachable collector never delays a request or a step.
``shutdown()`` flushes within the setting TELEMETRY_SHUTDOWN_TIMEOUT_SECONDS (default 1 s: enough for a collector
that answers, short enough that one that is down does not hold up a stopping process); it runs at exit, on
SIGTERM when nothing else handles that signal, from gunicorn's worker_exit hook and when the worker command stops.

Just over 400 lines: the set-up of the three signals and their shutdown belong together.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from types import FrameType
from typing import Any

logger = logging.getLogger("observability")

DEFAULT_SERVICE_NAME = "orchestration-service"
# Django requests that are not worth a trace: probes and scrapes (matched against the full URL).
DEFAULT_EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$"
# The default sampler, and the fraction of traces whose detail spans (queries, HTTP calls) it records.
RUNS_SAMPLER = "runs"
DEFAULT_DETAIL_RATIO = 0.1
# Default metric export interval: Prometheus' scrape interval in deploy/ (15 s).
METRIC_EXPORT_INTERVAL_MS = 15_000
_SIGNALS = ("traces", "metrics", "logs")


class _Stopper:
    """Shuts one provider down on a thread started at bootstrap.

    The thread exists before it is needed because at interpreter exit no new thread may be started, and
    the main thread must be able to give up waiting on an exporter that hangs.
    """

    def __init__(self, provider: Any, after: list[_Stopper]) -> None:
        self.provider = provider
        self.after = after
        self.requested = threading.Event()
        self.done = threading.Event()
        self.deadline = 0.0
        threading.Thread(target=self._run, name="otel-shutdown", daemon=True).start()

    def _run(self) -> None:
        self.requested.wait()
        for other in self.after:
            other.done.wait(max(0.0, self.deadline - time.monotonic()))
        try:
            self.provider.shutdown()
        finally:
            self.done.set()


@dataclass
class _State:
    pid: int = 0
    enabled: bool = False
    stoppers: list[_Stopper] = field(default_factory=list)
    shut_down: bool = False


_state = _State()
_lock = threading.Lock()


def is_enabled() -> bool:
    """True when this process has a real tracer provider (bootstrapped, and not disabled)."""
    return _state.enabled and _state.pid == os.getpid()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def sdk_disabled(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    return _truthy(env.get("OTEL_SDK_DISABLED"))


def exporters_for(signal_name: str, env: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """The exporters chosen for one signal (``traces``, ``metrics``, ``logs``); [] means none."""
    raw = env.get(f"OTEL_{signal_name.upper()}_EXPORTER")
    if raw is None or not raw.strip():
        configured = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
            f"OTEL_EXPORTER_OTLP_{signal_name.upper()}_ENDPOINT"
        )
        return ["otlp"] if configured else []
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    allowed = {"otlp", "console", "none"} | ({"prometheus"} if signal_name == "metrics" else set())
    unknown = [name for name in names if name not in allowed]
    if unknown:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"OTEL_{signal_name.upper()}_EXPORTER={raw!r}: unknown exporter {unknown[0]!r} "
            f"(use one of {', '.join(sorted(allowed))})"
        )
    return [name for name in names if name != "none"]


def otlp_protocol(signal_name: str, env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    protocol = (
        env.get(f"OTEL_EXPORTER_OTLP_{signal_name.upper()}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol not in ("grpc", "http/protobuf"):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported (use grpc or http/protobuf)"
        )
    return protocol


def traces_sampler(env: dict[str, str] | os._Environ[str] = os.environ) -> Any:
    """The sampler named by OTEL_TRACES_SAMPLER (default ``runs``), inside QuietRootsSampler.

    ``runs`` takes its ratio of detail spans from OTEL_TRACES_SAMPLER_ARG (default DEFAULT_DETAIL_RATIO); any
    other name is the SDK's, read by the SDK from the process environment.
    """
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

    from observability.sampling import QuietRootsSampler, RunsSampler

    name = (env.get("OTEL_TRACES_SAMPLER") or RUNS_SAMPLER).strip().lower()
    if name != RUNS_SAMPLER:
        return QuietRootsSampler(_get_from_env_or_default())
    raw = (env.get("OTEL_TRACES_SAMPLER_ARG") or "").strip()
    try:
        ratio = float(raw) if raw else DEFAULT_DETAIL_RATIO
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"OTEL_TRACES_SAMPLER_ARG={raw!r}: the runs sampler records detail spans for this fraction of traces, "
            "a number from 0 to 1"
        )
    return QuietRootsSampler(RunsSampler(ratio))


def service_version() -> str:
    try:
        return metadata.version("commandcenter")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def build_resource() -> Any:
    """service.name, service.version, deployment.environment, service.instance.id; env attributes win."""
    from django.conf import settings
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    defaults = Resource.create(
        {
            "service.name": DEFAULT_SERVICE_NAME,
            "service.version": service_version(),
            "deployment.environment": settings.DEPLOYMENT_ENVIRONMENT,
            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
        }
    )
    # Resource.create lets its arguments override OTEL_RESOURCE_ATTRIBUTES; here the environment decides.
    merged = defaults.merge(OTELResourceDetector().detect())

    class HashedOnce(Resource):
        """Hashed once instead of on every call: the OTLP exporters group every span, log record and metric by
        its resource, and ``Resource.__hash__`` serialises all the attributes to JSON each time (measured under
        load on the trigger endpoint: a tenth of what telemetry cost the web tier). A resource never changes."""

        def __init__(self, attributes: Any, schema_url: str | None = None) -> None:
            super().__init__(attributes, schema_url)
            self._hash = super().__hash__()

        def __hash__(self) -> int:
            return self._hash

    return HashedOnce(merged.attributes, merged.schema_url)


def bootstrap(role: str = "") -> bool:
    """Sets up tracing, metrics, logs and instrumentation for this process; returns whether it is enabled.

    ``role="worker"`` additionally serves the OpenTelemetry metrics on OTEL_EXPORTER_PROMETHEUS_HOST:PORT
    when OTEL_METRICS_EXPORTER=prometheus (the web tier serves them on /metrics).
    """
    with _lock:
        first = _state.pid != os.getpid()
        if first:
            _state.pid = os.getpid()
            _state.enabled = False
            _state.stoppers = []
            _state.shut_down = False
            if not sdk_disabled():
                _state.stoppers = _setup()
                _state.enabled = True
                atexit.register(shutdown)
                _handle_sigterm()
        if role == "worker" and _state.enabled:
            _serve_worker_metrics()
    return _state.enabled


def _setup() -> list[_Stopper]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from observability.metrics import instrument_process
    from observability.sampling import PresetIdGenerator

    resource = build_resource()
    tracer_provider = TracerProvider(
        resource=resource,
        sampler=traces_sampler(),
        id_generator=PresetIdGenerator(),
        shutdown_on_exit=False,
    )
    for exporter in _span_exporters():
        tracer_provider.add_span_processor(_batch_span_processor(exporter))
    trace.set_tracer_provider(tracer_provider)
    meter_provider = _meter_provider(resource)
    instrument_process(meter_provider)
    logger_provider = _logger_provider(resource)
    _instrument(log_export=logger_provider is not None)

    stoppers = [_Stopper(tracer_provider, after=[]), _Stopper(meter_provider, after=[])]
    if logger_provider is not None:
        # Last, so that what the others log while they shut down is still exported.
        stoppers.append(_Stopper(logger_provider, after=list(stoppers)))
    return stoppers


def _span_exporters() -> list[Any]:
    exporters: list[Any] = []
    for name in exporters_for("traces"):
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif otlp_protocol("traces") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

            exporters.append(GrpcSpanExporter())
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
    return exporters


def _batch_span_processor(exporter: Any) -> Any:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Spans of a run in flight should reach the backend within a second or so, not the SDK's 5 s.
    delay = None if os.environ.get("OTEL_BSP_SCHEDULE_DELAY") else 1000
    return BatchSpanProcessor(exporter, schedule_delay_millis=delay)


def _meter_provider(resource: Any) -> Any:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from observability.metrics import views

    # Every METRIC_EXPORT_INTERVAL_MS, Prometheus' scrape interval, unless OTEL_METRIC_EXPORT_INTERVAL says
    # otherwise: the dashboards' $__rate_interval (at least four scrape intervals) then spans four exports.
    interval = None if os.environ.get("OTEL_METRIC_EXPORT_INTERVAL") else METRIC_EXPORT_INTERVAL_MS
    readers: list[Any] = []
    for name in exporters_for("metrics"):
        if name == "prometheus":
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                logger.warning(
                    "OTEL_METRICS_EXPORTER=prometheus serves one process's metrics; with several gunicorn "
                    "workers /metrics shows django-prometheus only. Export over OTLP instead."
                )
            readers.append(PrometheusMetricReader())
        elif name == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(), interval))
        elif otlp_protocol("metrics") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetricExporter,
            )

            readers.append(PeriodicExportingMetricReader(GrpcMetricExporter(), interval))
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(), interval))
    provider = MeterProvider(resource=resource, metric_readers=readers, views=views(), shutdown_on_exit=False)
    metrics.set_meter_provider(provider)
    return provider


def _logger_provider(resource: Any) -> Any:
    names = exporters_for("logs")
    if not names:
        return None
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    for name in names:
        if name == "console":
            from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

            exporter: Any = ConsoleLogRecordExporter()
        elif otlp_protocol("logs") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter

            exporter = GrpcLogExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

            exporter = OTLPLogExporter()
        delay = None if os.environ.get("OTEL_BLRP_SCHEDULE_DELAY") else 1000
        provider.add_log_record_processor(BatchLogRecordProcessor(exporter, schedule_delay_millis=delay))
    set_logger_provider(provider)
    return provider


def _instrument(*, log_export: bool) -> None:
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.logging import LoggingInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # django-prometheus measures the web tier on /metrics; the OTel HTTP server metrics would only
    # duplicate it with more series, so Django's instrumentation gets a no-op meter.
    DjangoInstrumentor().instrument(
        excluded_urls=os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS") or DEFAULT_EXCLUDED_URLS,
        meter_provider=NoOpMeterProvider(),
    )
    PsycopgInstrumentor().instrument(skip_dep_check=True, enable_commenter=False)
    HTTPXClientInstrumentor().instrument(request_hook=_redact_secret_url)
    # The JSON formatter adds trace_id/span_id itself; the instrumentation attaches the OTLP log
    # handler to the root logger (and keeps it there when Django applies LOGGING).
    LoggingInstrumentor().instrument(set_logging_format=False, enable_log_auto_instrumentation=log_export)


def _redact_secret_url(span: Any, request: Any) -> None:
    """httpx request hook: a request that agents.http marked secret (a notifier's webhook URL, whose path is
    its credential) is recorded with only its scheme, host and port in http.url / url.full."""
    from agents.http import REDACT_URL, redact

    if not request.extensions or not request.extensions.get(REDACT_URL) or not span.is_recording():
        return
    redacted = redact(str(request.url))
    recorded = span.attributes or {}
    for key in ("http.url", "url.full"):
        if key in recorded:
            span.set_attribute(key, redacted)


def _serve_worker_metrics() -> None:
    if "prometheus" not in exporters_for("metrics") or getattr(_serve_worker_metrics, "started", False):
        return
    from prometheus_client import start_http_server

    host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST") or "localhost"
    port = int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT") or 9464)
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        logger.warning("cannot serve worker metrics on %s:%s: %s", host, port, exc)
        return
    _serve_worker_metrics.started = True  # type: ignore[attr-defined]
    logger.info("worker metrics on http://%s:%s/metrics", host, port)


def shutdown(timeout: float | None = None) -> None:
    """Flushes and stops the exporters, waiting at most ``timeout`` seconds in total."""
    with _lock:
        if not is_enabled() or _state.shut_down:
            return
        _state.shut_down = True
    if timeout is None:
        from django.conf import settings

        timeout = settings.TELEMETRY_SHUTDOWN_TIMEOUT_SECONDS
    # Each provider flushes on its own thread, so one unreachable endpoint cannot use up the others'
    # time, and the process exits on time even if an exporter hangs.
    deadline = time.monotonic() + timeout
    for stopper in _state.stoppers:
        stopper.deadline = deadline
        stopper.requested.set()
    for stopper in _state.stoppers:
        stopper.done.wait(max(0.0, deadline - time.monotonic()))


def _handle_sigterm() -> None:
    """Flush on SIGTERM when the process has no handler of its own (runserver, one-off commands).

    gunicorn and the worker command install their own handlers afterwards and flush when they stop.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        shutdown()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
