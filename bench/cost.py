"""Instructions per trigger request, telemetry off and on, counted by valgrind's callgrind.

Request rates on a shared VM drift by tens of percent between rounds of a few seconds; an instruction count
does not. Each mode runs in its own web process (``config.wsgi``, so telemetry is set up exactly as under
gunicorn) that sends trigger requests through the WSGI handler: the whole middleware stack, token check,
Django and psycopg instrumentation, the run, its steps, its transition and its first task written to
PostgreSQL. Callgrind counts every instruction of that process, in every thread: request handling, span
creation, and the batch processors encoding and sending spans and log records over OTLP/gRPC to the
benchmark's receiver. PostgreSQL's own work is in another process and is not counted.

Two processes per mode, with ``small`` and ``large`` measured requests after the same warm-up; the difference
divided by ``large - small`` is the cost of one request, without start-up, warm-up or the final flush. The
batch processors' schedule delays are set far beyond the measurement so that spans go out in full batches of
512 as they would at a few hundred spans a second (under callgrind a request takes about a second, and a
1 s schedule would export a handful of spans at a time); metrics are exported once a minute in production,
not per request, so only their recording is counted.

Modes: ``off`` (OTEL_SDK_DISABLED=true), ``on`` (the default sampler, ``runs``, at its default ratio: every
request's server span and every run's spans recorded, the queries for a tenth of the traces; metrics and logs),
``every_span`` (``parentbased_always_on``: every query a recorded span too, the SDK's default), ``sampled``
(``parentbased_traceidratio`` at 0.1 for requests that arrive without a trace context, so nine runs in ten go
untraced), ``untraced`` (``always_off``: no span recorded). Metrics and logs are as ``on`` in every mode but
``off``. Needs valgrind (Debian package ``valgrind``).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT

WARMUP = 30
SAMPLED_RATIO = "0.1"
BODY = b'{"context": {}}'
# Far beyond any measurement: exports happen when a batch is full, as under load, or at the final flush.
BATCHING = {
    "OTEL_BSP_SCHEDULE_DELAY": "3600000",
    "OTEL_BLRP_SCHEDULE_DELAY": "3600000",
    "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
}


def instructions(env_off: dict[str, str], env_on: dict[str, str], *, small: int, large: int) -> dict[str, Any]:
    if not shutil.which("valgrind"):
        raise SystemExit("api_cost needs valgrind: apt-get install -y valgrind")
    modes = {
        "off": env_off,
        "on": {**env_on, **BATCHING},
        "every_span": {**env_on, **BATCHING, "OTEL_TRACES_SAMPLER": "parentbased_always_on"},
        "sampled": {
            **env_on,
            **BATCHING,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": SAMPLED_RATIO,
        },
        # No trace recorded at all: what metrics, logs and the instrumentation's own work cost.
        "untraced": {**env_on, **BATCHING, "OTEL_TRACES_SAMPLER": "always_off"},
    }
    from bench.api import issue_token

    token = issue_token()  # once: children running side by side would race to create the user
    per_request: dict[str, int] = {}
    for mode, env in modes.items():
        counts = _measure({**env, "BENCH_TOKEN": token}, small=small, large=large)
        per_request[mode] = round((counts[large] - counts[small]) / (large - small))
    off = per_request["off"]
    return {
        "requests": {"warmup": WARMUP, "small": small, "large": large},
        "sampled_ratio": float(SAMPLED_RATIO),
        "instructions_per_request": per_request,
        # Requests per unit of CPU, on relative to off: the web tier's throughput ratio where CPU bounds it.
        "ratio_on": round(off / per_request["on"], 3),
        "ratio_every_span": round(off / per_request["every_span"], 3),
        "ratio_sampled": round(off / per_request["sampled"], 3),
        "ratio_untraced": round(off / per_request["untraced"], 3),
    }


def _measure(env: dict[str, str], *, small: int, large: int) -> dict[int, int]:
    """Runs one process per count side by side under callgrind; returns each one's measured instructions."""
    out_dir = Path(tempfile.mkdtemp(prefix="bench-cost-"))
    procs = {}
    with contextlib.ExitStack() as logs:
        for n in (small, large):
            callgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/{n}.%p"]
            procs[n] = subprocess.Popen(
                [*callgrind, PYTHON, "-m", "bench.cost", str(n)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=logs.enter_context(open(out_dir / f"{n}.log", "wb")),
            )
            # the child has its own copy of the descriptor; ours closes when both are started
    counts = {}
    for n, proc in procs.items():
        if proc.wait() != 0:
            raise RuntimeError(f"callgrind child ({n} requests) failed: see {out_dir}/{n}.log")
        counts[n] = _summary(out_dir, n)
    shutil.rmtree(out_dir, ignore_errors=True)
    return counts


def _summary(out_dir: Path, n: int) -> int:
    """Instructions in the part dumped at the end of the measurement (callgrind writes it as <file>.1)."""
    dumps = list(out_dir.glob(f"{n}.*.1"))
    if len(dumps) != 1:
        raise RuntimeError(f"expected one measured dump for {n} requests in {out_dir}, found {dumps}")
    for line in dumps[0].read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary line in {dumps[0]}")


def _child(measured: int) -> None:
    """Inside callgrind: warm up, zero the counters, send ``measured`` requests, flush, dump."""
    import random

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    from bench.api import WORKFLOW
    from config.wsgi import application

    random.seed(0)  # trace ids, hence which requests the ratio sampler keeps, are the same in every run
    token = os.environ["BENCH_TOKEN"]
    path = f"/api/workflows/{WORKFLOW}/trigger"

    def request() -> None:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(BODY),
            "wsgi.errors": sys.stderr,
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(BODY)),
            "HTTP_AUTHORIZATION": f"Bearer {token}",
        }
        status: list[str] = []

        def start_response(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status.append(code)
            return lambda data: None

        b"".join(application(environ, start_response))
        if not status[0].startswith("202"):
            raise RuntimeError(f"trigger answered {status[0]}")

    for _ in range(WARMUP):
        request()
    _flush()
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
    for _ in range(measured):
        request()
    _flush()
    subprocess.run(["callgrind_control", "--dump=measured", pid], check=True, capture_output=True)


def _flush() -> None:
    from opentelemetry import trace
    from opentelemetry._logs import get_logger_provider

    for provider in (trace.get_tracer_provider(), get_logger_provider()):
        flush = getattr(provider, "force_flush", None)
        if flush is not None:
            flush()


if __name__ == "__main__":
    _child(int(sys.argv[1]))
