"""gunicorn settings for the web tier: ``gunicorn -c config/gunicorn.py config.wsgi``.

Environment: GUNICORN_BIND (default 0.0.0.0:9002), WEB_CONCURRENCY (worker processes, default 2),
GUNICORN_THREADS (threads per worker, default 4), GUNICORN_TIMEOUT (seconds, default 30),
GUNICORN_CONTROL_SOCKET (path of gunicorn's control socket; none unless set) and
PROMETHEUS_MULTIPROC_DIR (default var/prometheus-multiproc); LOG_FORMAT and LOG_LEVEL as for the service.

OpenTelemetry is set up in each worker after the fork (post_fork): exporter threads and gRPC channels do
not survive a fork, so nothing telemetry-related is created in the master. django-prometheus runs in
prometheus_client's multiprocess mode so that /metrics adds up every worker, whichever one serves it.

gunicorn's own lines (starting, booting and exiting workers, signals, errors) go to stdout in the service's
log format, JSON or text, like every other line, instead of to stderr in gunicorn's.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from gunicorn import glogging

from config.env import envbool, envchoice
from observability.logs import stdout_logging

_BASE_DIR = Path(__file__).resolve().parent.parent
# post_fork sets telemetry up, which reads Django settings, before the worker loads config.wsgi (which would set
# this): gunicorn started outside the image, from a bare environment, must find the settings too.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:9002")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
# The app is loaded in each worker, after post_fork has set up telemetry there.
preload_app = False
accesslog = None
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn's control socket defaults to one path per user ($XDG_RUNTIME_DIR or ~/.gunicorn/gunicorn.ctl), which
# every master on the host would share; it is opened only where GUNICORN_CONTROL_SOCKET names a path of its own.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
control_socket_disable = not control_socket

# --- Logging: gunicorn's own lines in the service's format, on stdout ------------------------------------
# The master never loads Django settings, so LOG_LEVEL and LOG_FORMAT are read here by settings.py's rule.
loglevel = envchoice("LOG_LEVEL", "info", ("debug", "info", "warning", "error"))
_LOG_FORMAT = envchoice("LOG_FORMAT", "text" if envbool("DEBUG", False) else "json", ("json", "text"))

# gunicorn updates its defaults (glogging.CONFIG_DEFAULTS) with this one top-level key at a time, so each key
# given replaces gunicorn's whole entry, its stderr handler and plain-text format included. gunicorn.error
# has its own handler and does not propagate: its lines are written once, in the master and in each worker,
# before and after Django's LOGGING takes the root logger over there (LOGGING leaves gunicorn.* alone). Its
# level is loglevel. The formatters are settings.LOGGING's; observability.logs imports only the OpenTelemetry
# API, neither Django settings nor anything that sets telemetry up. gunicorn.access is left as gunicorn sets
# it up (no handler with accesslog None, no propagation), so there is still no access log.
logconfig_dict = {
    **stdout_logging(_LOG_FORMAT, loglevel),
    "loggers": {"gunicorn.error": {"handlers": ["stdout"], "propagate": False}},
}


class QuietAccessLogger(glogging.Logger):
    """gunicorn's logger, with the access log on only when ``accesslog`` is set: with ``logconfig_dict`` given
    (for the lines above), gunicorn would otherwise build an access record for every request, from every
    header and WSGI environ entry, and hand it to a logger with no handler."""

    @property
    def access_log_enabled(self) -> bool:
        return bool(self.cfg.accesslog)


logger_class = QuietAccessLogger

# Must be in the environment before prometheus_client is first imported (in the workers).
_multiproc_dir = Path(
    os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR", str(Path(os.environ.get("VAR_DIR", _BASE_DIR / "var")) / "prometheus-multiproc")
    )
)


def on_starting(server: Any) -> None:
    # Files left by an earlier master would be added to this one's counts.
    shutil.rmtree(_multiproc_dir, ignore_errors=True)
    _multiproc_dir.mkdir(parents=True, exist_ok=True)


def post_fork(server: Any, worker: Any) -> None:
    from observability.otel import bootstrap

    bootstrap()


def worker_exit(server: Any, worker: Any) -> None:
    from observability.otel import shutdown

    shutdown()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
