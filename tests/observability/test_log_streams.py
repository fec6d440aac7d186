"""With DEBUG on, every log line the web and the worker write is one JSON line on stdout, and none is also
written in plain text to stderr (Django's default handlers for its own loggers, which LOGGING replaces)."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from tests.observability.conftest import Tokens
from tests.observability.procs import Process, free_port, http, service_env, start_runserver, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def strict_json(line: str) -> dict[str, Any]:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    parsed = json.loads(line, parse_constant=refuse)
    assert isinstance(parsed, dict), line
    return parsed


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def task_lines(worker: Process) -> Counter[tuple[str, str]]:
    """django.tasks' "Task id=<id> path=... state=<state>" lines the worker wrote, counted by (id, state)."""
    text = worker.output()
    records = [strict_json(line) for line in lines(text[: text.rfind("\n") + 1])]  # a line being written waits
    found: Counter[tuple[str, str]] = Counter()
    for r in records:
        if r["logger"] == "django.tasks" and r["message"].startswith("Task id="):
            fields = dict(part.split("=", 1) for part in r["message"].removeprefix("Task ").split())
            found[fields["id"], fields["state"]] += 1
    return found


def wait_until_idle(base: str, token: str, run_id: str, worker: Process) -> None:
    """Until the run has succeeded and the worker has logged the end of every task it started."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        worker.check_alive()
        status, run, _ = http("GET", f"{base}/api/runs/{run_id}", token=token)
        assert status == 200, run
        assert run["status"] not in ("FAILED", "CANCELLED"), run
        states = Counter(state for _, state in task_lines(worker).elements())
        if run["status"] == "SUCCESS" and states["RUNNING"] == states["SUCCESSFUL"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish:\n{worker.output()[-3000:]}")


def test_the_web_and_the_worker_write_each_log_line_once_as_json_on_stdout(committed: Tokens) -> None:
    env = service_env(OTEL_SDK_DISABLED="true")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = start_runserver(port, env, stderr_apart=True)
    worker = start_worker(env, stderr_apart=True)
    try:
        status, run, _ = http("POST", f"{base}/api/workflows/quick/trigger", token=committed.trigger, body={})
        assert status == 202, run
        wait_until_idle(base, committed.trigger, run["id"], worker)
        assert http("GET", f"{base}/nowhere")[0] == 404
    finally:
        worker.stop()
        web.stop()

    # runserver prints its banner (date, version, address, the development-server warning) to stdout before
    # it serves, so it comes before the first log line; no log line may be among it or after it in plain text.
    out = lines(web.output())
    first_record = next(i for i, line in enumerate(out) if line.startswith("{"))
    banner, records = out[:first_record], [strict_json(line) for line in out[first_record:]]
    assert [line for line in banner if line.endswith(f"development server at {base}/")], banner
    assert not [line for line in banner if "HTTP/1.1" in line or "Not Found" in line], banner

    # Each request is logged once, by django.server (runserver's request line) and, for the 404, django.request.
    served = Counter(r["message"].split('"')[1] for r in records if r["logger"] == "django.server")
    assert served["POST /api/workflows/quick/trigger HTTP/1.1"] == 1, records
    assert served["GET /nowhere HTTP/1.1"] == 1, records
    not_found = [r for r in records if r["logger"] == "django.request"]
    assert [(r["message"], r["status_code"]) for r in not_found] == [("Not Found: /nowhere", 404)]
    # The socket runserver passes along is written as its client's address (or "disconnected" when the client
    # reset the connection before runserver logged the request), never as the socket's repr.
    clients = {r["request"].rsplit(":", 1)[0] for r in records if r["logger"] == "django.server"}
    assert clients and clients <= {"127.0.0.1", "disconnected"}, clients

    # The worker writes nothing but log records: every line is JSON, and django.tasks' state lines are there
    # once each: every task the worker took is RUNNING once and SUCCESSFUL once.
    work = [strict_json(line) for line in lines(worker.output())]
    assert [r for r in work if r.get("event") == "step.attempt" and r.get("run_id") == run["id"]], work
    tasks = task_lines(worker)
    ids = {task for task, _ in tasks}
    assert ids, work
    assert tasks == {(task, state): 1 for task in ids for state in ("RUNNING", "SUCCESSFUL")}

    # Nothing reaches stderr: no plain-text copy of a log line, and nothing else either (checks are skipped,
    # telemetry is off, and runserver's banner goes to stdout).
    assert web.errors() == ""
    assert worker.errors() == ""
