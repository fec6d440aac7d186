"""An OTLP receiver for the tests: gRPC and HTTP/protobuf servers that keep what they are sent.

Built on opentelemetry-proto's generated messages and gRPC services, so the processes under test talk to
it exactly as they would to an OpenTelemetry Collector.
"""

from __future__ import annotations

import gzip
import re
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in kvs}


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    scope: str
    start: int
    end: int


@dataclass
class Point:
    metric: str
    unit: str
    kind: str  # sum, gauge, histogram
    attributes: dict[str, Any]
    value: float
    bounds: list[float]
    exemplars: int
    resource: dict[str, Any]
    scope: str
    monotonic: bool = False  # a sum that only grows (a counter)

    @property
    def prometheus_name(self) -> str:
        """The series name Prometheus gets for this metric from the Collector's (and Python's) Prometheus exporter.

        Dots and other invalid characters become underscores, the unit becomes a suffix (``By`` -> ``_bytes``,
        ``s`` -> ``_seconds``; annotations in braces are dropped), and a monotonic sum ends in ``_total``.
        """
        name = re.sub(r"[^a-zA-Z0-9_:]", "_", self.metric)
        unit = re.sub(r"\{[^}]*\}", "", self.unit)
        suffix = {"By": "bytes", "s": "seconds", "ms": "milliseconds", "1": "ratio" if self.kind == "gauge" else ""}
        unit = suffix.get(unit, unit)
        if unit and not name.endswith(f"_{unit}"):
            name = f"{name}_{unit}"
        return f"{name}_total" if self.monotonic else name


@dataclass
class Log:
    trace_id: str
    span_id: str
    body: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]


@dataclass
class Received:
    spans: list[Span] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    logs: list[Log] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=lambda: {"grpc": 0, "http": 0})


class Receiver:
    def __init__(self) -> None:
        self.got = Received()
        self.lock = threading.Lock()
        self.grpc_server: grpc.Server | None = None
        self.http_server: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    # --- what the servers call ---

    def add_traces(self, request: trace_service_pb2.ExportTraceServiceRequest, via: str) -> None:
        spans = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(
                        Span(
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            name=s.name,
                            kind=s.kind,
                            attributes=attributes(s.attributes),
                            status_code=s.status.code,
                            events=[(e.name, attributes(e.attributes)) for e in s.events],
                            resource=resource,
                            scope=ss.scope.name,
                            start=s.start_time_unix_nano,
                            end=s.end_time_unix_nano,
                        )
                    )
        with self.lock:
            self.got.spans.extend(spans)
            self.got.requests[via] += 1

    def add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest, via: str) -> None:
        points = []
        for rm in request.resource_metrics:
            resource = attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    data = getattr(m, kind)
                    for dp in data.data_points:
                        if kind == "histogram":
                            value, bounds = float(dp.count), list(dp.explicit_bounds)
                        else:
                            value, bounds = float(dp.as_double or dp.as_int), []
                        points.append(
                            Point(
                                metric=m.name,
                                unit=m.unit,
                                kind=kind,
                                attributes=attributes(dp.attributes),
                                value=value,
                                bounds=bounds,
                                exemplars=len(dp.exemplars),
                                resource=resource,
                                scope=sm.scope.name,
                                monotonic=kind == "sum" and data.is_monotonic,
                            )
                        )
        with self.lock:
            self.got.points.extend(points)
            self.got.requests[via] += 1

    def add_logs(self, request: logs_service_pb2.ExportLogsServiceRequest, via: str) -> None:
        logs = []
        for rl in request.resource_logs:
            resource = attributes(rl.resource.attributes)
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    logs.append(
                        Log(
                            trace_id=r.trace_id.hex(),
                            span_id=r.span_id.hex(),
                            body=value_of(r.body),
                            attributes=attributes(r.attributes),
                            resource=resource,
                        )
                    )
        with self.lock:
            self.got.logs.extend(logs)
            self.got.requests[via] += 1

    # --- reading ---

    def spans(self, trace_id: str | None = None) -> list[Span]:
        with self.lock:
            return [s for s in self.got.spans if trace_id is None or s.trace_id == trace_id]

    def points(self, metric: str | None = None) -> list[Point]:
        with self.lock:
            return [p for p in self.got.points if metric is None or p.metric == metric]

    def logs(self, trace_id: str | None = None) -> list[Log]:
        with self.lock:
            return [r for r in self.got.logs if trace_id is None or r.trace_id == trace_id]

    def wait_for(self, what: str, condition: Callable[[], Any], timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            time.sleep(0.1)
        raise AssertionError(f"the OTLP receiver did not get {what} within {timeout:g}s")

    # --- servers ---

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Receiver:
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver.add_traces(request, "grpc")
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver.add_metrics(request, "grpc")
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver.add_logs(request, "grpc")
                return logs_service_pb2.ExportLogsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
        self.grpc_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.grpc_server = server

        routes: dict[str, tuple[Any, Callable[[Any, str], None], Any]] = {
            "/v1/traces": (
                trace_service_pb2.ExportTraceServiceRequest,
                self.add_traces,
                trace_service_pb2.ExportTraceServiceResponse,
            ),
            "/v1/metrics": (
                metrics_service_pb2.ExportMetricsServiceRequest,
                self.add_metrics,
                metrics_service_pb2.ExportMetricsServiceResponse,
            ),
            "/v1/logs": (
                logs_service_pb2.ExportLogsServiceRequest,
                self.add_logs,
                logs_service_pb2.ExportLogsServiceResponse,
            ),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                message, add, response = route
                add(message.FromString(body), "http")
                payload = response().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_port = self.http_server.server_address[1]
        threading.Thread(target=self.http_server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.grpc_server is not None:
            self.grpc_server.stop(grace=None)
        if self.http_server is not None:
            self.http_server.shutdown()
            self.http_server.server_close()
