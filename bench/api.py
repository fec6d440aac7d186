"""The web tier under load: trigger requests/s under gunicorn with telemetry on and off, and its memory.

Two gunicorn masters (``config/gunicorn.py``, 2 workers x GUNICORN_THREADS threads, each on its own free
loopback port and its own PROMETHEUS_MULTIPROC_DIR) run side by side for the whole section: one exports OTLP to
the in-process receiver, the other has OTEL_SDK_DISABLED=true. The load alternates between them in rounds
(off, on, on, off, ...) so that drift in the machine's load falls on both alike. No task worker runs: this
measures the web tier alone (each request authenticates the token, creates a run and enqueues its first task).

Load comes from ``wrk`` (Debian package ``wrk``) with a Lua script for the POST body and headers, or, when wrk
is not installed, from the Python generator below (threads, one keep-alive ``http.client`` connection each).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, percentile, rss_mib, wait_until

WORKFLOW = "noop-3"
BODY = b'{"context": {}}'


def issue_token() -> str:
    """A user and an API token in the bench database; returns the token's plain value."""
    from django.contrib.auth import get_user_model

    from accounts.models import ApiToken

    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_superuser": True})
    _, value = ApiToken.issue(user, name="bench", scopes=("trigger", "read"))
    return value


def discard_backlog() -> int:
    """Deletes the runs this section triggered and their queued tasks, so later sections start from an empty
    queue (no task worker ran here, so every one of them is still PENDING). Returns how many runs."""
    from django_tasks_db.models import DBTaskResult

    from workflows.models import TriggerSource, WorkflowRun

    DBTaskResult.objects.filter(status="READY").delete()
    deleted = WorkflowRun.objects.filter(trigger=TriggerSource.API).count()
    WorkflowRun.objects.filter(trigger=TriggerSource.API).delete()
    return deleted


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Web:
    """One gunicorn master serving on 127.0.0.1:port."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def path(self) -> str:
        return f"/api/workflows/{WORKFLOW}/trigger"

    def children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def memory(self) -> dict[str, Any]:
        """RSS of the master and each worker, and the sum of PSS (shared pages counted once)."""
        workers = self.children()
        rss = [rss_mib(pid) for pid in workers]
        pids = [self.proc.pid, *workers]
        return {
            "master_rss": round(rss_mib(self.proc.pid), 1),
            "workers_rss": [round(r, 1) for r in rss],
            "total_rss": round(rss_mib(self.proc.pid) + sum(rss), 1),
            "total_pss": round(sum(pss_mib(pid) for pid in pids), 1),
        }


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def pss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@contextmanager
def gunicorn(name: str, env: dict[str, str], log_dir: Path, workers: int = 2) -> Iterator[Web]:
    port = free_port()
    prom_dir = log_dir / f"prometheus-{name}"
    env = {
        **env,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
    }
    log = log_dir / f"gunicorn-{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "config.wsgi:application", "-c", "config/gunicorn.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    web = Web(name, port, proc, log)
    try:
        wait_until(lambda: _healthy(web) and len(web.children()) == workers, 60, 0.1)
        yield web
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _healthy(web: Web) -> bool:
    if web.proc.poll() is not None:
        raise RuntimeError(f"gunicorn exited with {web.proc.returncode}; see {web.log}")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=2)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


# -- load generators -------------------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, '
    .. '"max_us": %%d, "mean_us": %%f, "connect_errors": %%d, "read_errors": %%d, "write_errors": %%d, '
    .. '"status_errors": %%d, "timeouts": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def load_wrk(web: Web, token: str, concurrency: int, seconds: float, log_dir: Path) -> dict[str, Any]:
    script = log_dir / "trigger.lua"
    script.write_text(WRK_SCRIPT % {"body": BODY.decode(), "token": token})
    threads = min(2, concurrency)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{web.port}{web.path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH_JSON "))
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return {
        "generator": "wrk",
        "requests": raw["requests"],
        "seconds": raw["duration_us"] / 1e6,
        "requests_per_second": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors,
    }


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def load_python(
    web: Web, token: str, concurrency: int, seconds: float | None = None, requests: int | None = None
) -> dict[str, Any]:
    """``concurrency`` keep-alive clients for ``seconds`` or until ``requests`` were sent, whichever is given."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    tally = _Tally()
    remaining = [requests if requests is not None else 1 << 62]
    deadline = time.monotonic() + (seconds if seconds is not None else 1e9)

    def take() -> bool:
        with tally.lock:
            if remaining[0] <= 0 or time.monotonic() >= deadline:
                return False
            remaining[0] -= 1
            return True

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
        local: list[float] = []
        statuses: dict[int, int] = {}
        errors = 0
        while take():
            started = time.perf_counter()
            try:
                conn.request("POST", web.path, body=BODY, headers=headers)
                response = conn.getresponse()
                response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status >= 400:
                    errors += 1
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
                continue
            local.append(time.perf_counter() - started)
        conn.close()
        with tally.lock:
            tally.latencies.extend(local)
            tally.errors += errors
            for status, n in statuses.items():
                tally.statuses[status] = tally.statuses.get(status, 0) + n

    started = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    lat = tally.latencies
    return {
        "generator": "python",
        "requests": len(lat),
        "seconds": elapsed,
        "requests_per_second": len(lat) / elapsed if elapsed else float("nan"),
        "p50_ms": percentile(lat, 50) * 1000,
        "p90_ms": percentile(lat, 90) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": max(lat, default=float("nan")) * 1000,
        "errors": tally.errors,
        "statuses": tally.statuses,
    }


def load(web: Web, token: str, concurrency: int, seconds: float, log_dir: Path, generator: str) -> dict[str, Any]:
    if generator == "wrk":
        return load_wrk(web, token, concurrency, seconds, log_dir)
    return load_python(web, token, concurrency, seconds=seconds)


# -- sections --------------------------------------------------------------------------------------------------


def _mean(rounds: list[dict[str, Any]], key: str) -> float:
    return sum(r[key] for r in rounds) / len(rounds)


def throughput(
    env_on: dict[str, str],
    env_off: dict[str, str],
    log_dir: Path,
    *,
    concurrency: int,
    seconds: float,
    rounds: int,
    generator: str | None = None,
) -> dict[str, Any]:
    """Trigger requests/s, telemetry on vs off, ``rounds`` rounds of ``seconds`` each per mode (ABBA order)."""
    generator = generator or ("wrk" if wrk_available() else "python")
    token = issue_token()
    per_mode: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    with gunicorn("on", env_on, log_dir) as web_on, gunicorn("off", env_off, log_dir) as web_off:
        webs = {"on": web_on, "off": web_off}
        for mode in ("on", "off"):  # warm-up: lazy imports, connections, first-request costs
            load_python(webs[mode], token, concurrency, seconds=min(2.0, seconds))
        order = [("off", "on"), ("on", "off")]
        for i in range(rounds):
            for mode in order[i % 2]:
                pids = webs[mode].children()
                cpu = cpu_seconds(pids)
                result = load(webs[mode], token, concurrency, seconds, log_dir, generator)
                result["web_cpu_ms_per_request"] = (cpu_seconds(pids) - cpu) / max(1, result["requests"]) * 1000
                result["load_1m"] = os.getloadavg()[0]
                per_mode[mode].append(result)
        memory = {mode: web.memory() for mode, web in webs.items()}
    discarded = discard_backlog()
    out: dict[str, Any] = {
        "runs_created_and_discarded": discarded,
        "workflow": WORKFLOW,
        "generator": generator,
        "concurrency": concurrency,
        "seconds_per_round": seconds,
        "rounds_per_mode": rounds,
        "gunicorn": {"workers": 2, "threads": int(env_on.get("GUNICORN_THREADS", "4"))},
        "task_workers_running": False,
        "memory_after": memory,
    }
    for mode, results in per_mode.items():
        out[mode] = {
            "requests_per_second": _mean(results, "requests_per_second"),
            "p50_ms": _mean(results, "p50_ms"),
            "p99_ms": _mean(results, "p99_ms"),
            "web_cpu_ms_per_request": _mean(results, "web_cpu_ms_per_request"),
            "requests": sum(r["requests"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "rounds": results,
        }
    # Each round runs both modes back to back, so the two share whatever else the machine was doing then;
    # the median of the per-round ratios is steadier than the ratio of the means when that varies.
    pairs = [
        on["requests_per_second"] / off["requests_per_second"]
        for on, off in zip(per_mode["on"], per_mode["off"], strict=True)
    ]
    out["round_ratios"] = [round(r, 3) for r in pairs]
    out["on_off_ratio"] = statistics.median(pairs)
    out["on_off_ratio_of_means"] = out["on"]["requests_per_second"] / out["off"]["requests_per_second"]
    # Requests per CPU-second of the web workers: what telemetry costs the web tier itself, apart from the
    # database and the load generator that share the machine.
    out["cpu_on_off_ratio"] = out["off"]["web_cpu_ms_per_request"] / out["on"]["web_cpu_ms_per_request"]
    return out


def web_memory(env: dict[str, str], log_dir: Path, *, requests: int, concurrency: int = 8) -> dict[str, Any]:
    """RSS of the gunicorn master and workers idle, after ``requests``/2 and after ``requests`` triggers."""
    token = issue_token()
    with gunicorn("memory", env, log_dir) as web:
        time.sleep(2.0)
        idle = web.memory()
        marks = []
        served = 0
        for _ in range(2):
            result = load_python(web, token, concurrency, requests=requests // 2)
            served += result["requests"]
            time.sleep(1.0)
            marks.append({**web.memory(), "errors": result["errors"]})
    discard_backlog()
    return {
        "unit": "MiB",
        "requests": served,
        "idle": idle,
        "after_half": marks[0],
        "after_all": marks[1],
        "growth_second_half": round(marks[1]["total_rss"] - marks[0]["total_rss"], 1),
    }
