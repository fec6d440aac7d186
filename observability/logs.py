"""Structured logs: one JSON object per line on stdout, with the trace and span of the current context."""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _encodable(value: Any) -> Any:
    """``value`` if strict JSON can hold it (after ``str`` of unknown types), else its ``repr``."""
    try:
        json.dumps(value, default=str, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)
    return value


def _peer(sock: socket.socket) -> str:
    """The address at the other end of ``sock``, as host:port; runserver's request lines carry the socket.

    runserver logs a request after answering it; a client that has already reset the connection by then has no
    address any more, and is written as "disconnected"."""
    try:
        peer = sock.getpeername()
    except OSError:  # reset by the client, closed, or never connected
        return "disconnected"
    if not isinstance(peer, tuple):  # not an IP socket
        return repr(sock)
    host, port = peer[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class JsonFormatter(logging.Formatter):
    """Every record is one line of strict JSON (no NaN or Infinity, which Loki and most readers refuse).

    Values JSON has no type for become strings (a socket, as django.server's ``request`` is, becomes the
    address of its client); a value it cannot hold at all (NaN, a mapping with tuple keys, a cycle) is
    written as its ``repr`` rather than losing the record.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("otel"):
                entry[key] = _peer(value) if isinstance(value, socket.socket) else value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        try:
            return json.dumps(entry, default=str, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return json.dumps({key: _encodable(value) for key, value in entry.items()}, default=str)


def stdout_logging(log_format: str, level: str) -> dict[str, Any]:
    """The dictConfig both Django's LOGGING and gunicorn's logconfig_dict start from: every line on stdout, in
    ``log_format`` ("json" through JsonFormatter, or "text"), the root logger at ``level``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "observability.logs.JsonFormatter"},
            "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        },
        "handlers": {
            "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": log_format}
        },
        "root": {"handlers": ["stdout"], "level": level.upper()},
    }
