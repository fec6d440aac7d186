"""Real faults with default settings: a SIGKILLed worker, then a soak of kills and database restarts.

Nothing here tunes a retry policy: the bundled workflows run as shipped (most steps have max_attempts 1), so
an attempt lost to a fault must not count as the step's own failure.
"""

from __future__ import annotations

import json
import random
import signal
import textwrap
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import User
from django.tasks import TaskResultStatus
from django.test import Client
from django.urls import reverse
from django_tasks_db.models import DBTaskResult

from agents.models import AgentRun
from tests.reliability.conftest import (
    BASE_ENV,
    ROOT,
    PgCluster,
    Processes,
    http,
    query,
    record_result,
    scaled,
    setup_database,
    start_web,
    wait_for,
)
from workflows.models import RunStatus, RunStep, StepStatus, Workflow, WorkflowRun
from workflows.services import trigger_workflow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.mark.timeout(180)
def test_a_chain_whose_worker_is_killed_mid_run_succeeds_on_another_worker(
    synced: None, default_processes: Processes
) -> None:
    """The reproducer: RUNNER_LEASE_SECONDS=3, chain-40, SIGKILL the worker 0.4 s in, start another."""
    lease = {"RUNNER_LEASE_SECONDS": "3"}
    first = default_processes.worker("first", **lease)
    run, _ = trigger_workflow(Workflow.objects.get(slug="chain-40"), context={})
    wait_for(lambda: RunStep.objects.filter(run=run, worker_id="first").exists(), 60, "the first worker to start")
    time.sleep(0.4)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    held = RunStep.objects.get(run=run, status=StepStatus.RUNNING)
    assert held.worker_id == "first"
    default_processes.worker("second", **lease)
    wait_for(lambda: WorkflowRun.objects.get(id=run.id).is_terminal, 90, "the run to finish")

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS, run.error
    lost = AgentRun.objects.get(run=run, status=AgentRun.Status.LOST)
    assert (lost.step_id, lost.attempt, lost.worker_id, lost.error_type) == (
        held.id,
        held.attempts,
        "first",
        "WorkerLost",
    )
    redo = AgentRun.objects.get(step_id=held.id, attempt=held.attempts + 1)
    assert (redo.status, redo.worker_id) == (AgentRun.Status.SUCCESS, "second")
    # Every other step ran exactly once; the lost attempt did not use the step's one attempt.
    assert run.attempts.count() == 41
    step = RunStep.objects.get(id=held.id)
    assert (step.attempts - step.attempt_offset, step.infrastructure_attempts) == (1, 1)
    # The queue row the killed worker left RUNNING was closed when its step was reaped.
    assert not DBTaskResult.objects.filter(status=TaskResultStatus.RUNNING).exists()
    assert DBTaskResult.objects.filter(worker_ids=["first"], exception_class_path__endswith="WorkerLost").exists()
    # The run page lists the lost attempt.
    admin = User.objects.create_superuser("root", password="root-pass-1")
    client = Client()
    client.force_login(admin)
    page = client.get(reverse("admin:workflows_workflowrun_change", args=[run.id]))
    assert page.status_code == 200 and "LOST" in page.content.decode()


# --- The fault soak ----------------------------------------------------------------------------------------

# The bundled workflows, plus one whose middle step calls a loopback server that counts the calls it gets: the
# side effect that a repeated attempt would repeat. Every node keeps the retry policy it ships with.
HOOK_DEFINITION = """
agents:
  - {slug: soak-hook, type: http, config: {url: "http://127.0.0.1:PORT/hook", method: POST}}
workflow:
  slug: soak-http
  name: Soak HTTP call
  nodes:
    - key: prepare
      agent: echo
      inputs: {n: "{{ context.n }}"}
    - key: call
      agent: soak-hook
      depends_on: [prepare]
      inputs: {json: {run: "{{ run.id }}"}}
    - key: done
      agent: echo
      depends_on: [call]
      inputs: {status: "{{ steps.call.output.status }}"}
"""
# One cycle of triggers; test-failure ends FAILED by design (its last step always fails, three attempts).
MIX = (
    ["noop-3"] * 7
    + ["soak-http"] * 5
    + ["scan-and-notify"] * 3
    + ["alert-notification"] * 2
    + ["chain-40", "test-failure", "scan-approve-notify"]
)
OUTCOME = {"test-failure": "FAILED"}

TRIGGERS = scaled(300, 1500)
LOAD_SECONDS = scaled(50, 300)
# Workers are killed until this long before the end of the load: a lost attempt is taken up again only once
# its lease (30 s by default) has run out.
KILL_EVERY, KILLS_STOP_BEFORE_END = scaled(6, 7), 15
# Seconds into the load: a fast restart, an immediate one (crash recovery), and an outage held for a while.
RESTARTS = scaled(
    [(12, "fast", 0.0), (24, "immediate", 0.0), (34, "fast", 5.0)],
    [(t, "fast", 0.0) for t in (20, 95, 170)]
    + [(t, "immediate", 0.0) for t in (45, 120, 195)]
    + [(70, "fast", 15.0), (245, "immediate", 15.0)],
)
QUIESCENCE_BOUND = scaled(150, 600)


class Hook(ThreadingHTTPServer):
    """Counts the POSTs it gets per run; answers after 0.3 s, so that a kill can land during a call."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HookHandler)
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class HookHandler(BaseHTTPRequestHandler):
    server: Hook

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        with self.server.lock:
            self.server.calls[str(body.get("run", ""))] += 1  # the side effect happens on arrival
        time.sleep(0.3)
        payload = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Trigger:
    key: str
    workflow: str
    run_id: str = ""
    answers: list[int] = field(default_factory=list)
    run_ids: set[str] = field(default_factory=set)


class Load(threading.Thread):
    """Triggers its share of the runs at an even pace, each with an Idempotency-Key, retried until it is accepted."""

    def __init__(self, base: str, token: str, triggers: list[Trigger], pace: float, give_up_at: float) -> None:
        super().__init__(daemon=True)
        self.base, self.token, self.triggers, self.pace, self.give_up_at = base, token, triggers, pace, give_up_at

    def run(self) -> None:
        for trigger in self.triggers:
            next_at = time.monotonic() + self.pace
            while time.monotonic() < self.give_up_at:
                status, body = http(
                    "POST",
                    f"{self.base}/api/workflows/{trigger.workflow}/trigger",
                    self.token,
                    {"context": {"n": trigger.key}},
                    timeout=30,
                    headers={"Idempotency-Key": trigger.key},
                )
                trigger.answers.append(status)
                if status == 202:
                    trigger.run_id = json.loads(body)["id"]
                    trigger.run_ids.add(trigger.run_id)
                    break
                time.sleep(0.5)
            time.sleep(max(0.0, next_at - time.monotonic()))


class Approver(threading.Thread):
    """An operator who approves every pending request, over the API, once a second."""

    def __init__(self, base: str, token: str) -> None:
        super().__init__(daemon=True)
        self.base, self.token = base, token
        self.halt = threading.Event()
        self.approved = 0

    def run(self) -> None:
        while not self.halt.wait(1.0):
            status, body = http("GET", f"{self.base}/api/approvals?status=PENDING&limit=100", self.token)
            if status != 200:
                continue
            for request in json.loads(body)["items"]:
                if http("POST", f"{self.base}/api/approvals/{request['id']}/approve", self.token)[0] == 200:
                    self.approved += 1


def open_runs_of(cluster: PgCluster, run_ids: list[str]) -> int:
    rows = query(cluster, "SELECT status FROM workflows_workflowrun WHERE id::text = ANY(%s)", [run_ids])
    return len(run_ids) - sum(status in ("SUCCESS", "FAILED", "CANCELLED", "REJECTED") for (status,) in rows)


def attempts_of(cluster: PgCluster, run_ids: list[str]) -> list[tuple[str, str, str, int, str, str, str]]:
    """(run, workflow, step key, attempt, status, error type, worker) of every attempt of these runs."""
    return query(  # type: ignore[return-value]
        cluster,
        "SELECT a.run_id::text, r.definition->>'slug', s.key, a.attempt, a.status, a.error_type, a.worker_id"
        " FROM agents_agentrun a JOIN workflows_runstep s ON s.id = a.step_id"
        " JOIN workflows_workflowrun r ON r.id = a.run_id WHERE a.run_id::text = ANY(%s)"
        " ORDER BY a.step_id, a.attempt",
        [run_ids],
    )


@pytest.mark.timeout(scaled(420, 1800))
def test_fault_soak(cluster: PgCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Hundreds of runs of the bundled workflows, default settings, three workers, while workers are SIGKILLed and
    replaced and the database is restarted (fast and immediate) and held down. Every accepted trigger ends as its
    workflow defines, nothing is stuck, every repeated execution is a killed or cut-off attempt."""
    rng = random.Random(20261203)
    hook = Hook()
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    definition = tmp_path / "soak-http.yaml"
    definition.write_text(textwrap.dedent(HOOK_DEFINITION).replace("PORT", str(hook.port)))
    tokens = setup_database(cluster, ROOT / "workflows" / "definitions", definition)
    processes = Processes(logs=tmp_path, url=cluster.url, env=dict(BASE_ENV))
    try:
        base = start_web(processes, cluster, tmp_path)
        workers = {f"w{i}": processes.worker(f"w{i}") for i in range(3)}
        triggers = [Trigger(f"soak-{n}", MIX[n % len(MIX)]) for n in range(TRIGGERS)]
        started = time.monotonic()
        give_up_at = started + LOAD_SECONDS + 60
        loads = [Load(base, tokens["load"], triggers[i::2], 2 * LOAD_SECONDS / TRIGGERS, give_up_at) for i in (0, 1)]
        approver = Approver(base, tokens["approver"])
        for thread in (*loads, approver):
            thread.start()

        kills: dict[str, float] = {}  # worker name -> when it was killed
        restarts: list[tuple[str, float, float]] = []  # mode, held down for, down (s)
        pending = sorted(RESTARTS)
        next_kill = started + KILL_EVERY
        while time.monotonic() - started < LOAD_SECONDS:
            now = time.monotonic()
            if pending and now - started >= pending[0][0]:
                _, mode, hold = pending.pop(0)
                restarts.append((mode, hold, cluster.restart(mode, down_for=hold)))
            elif now >= next_kill and now - started < LOAD_SECONDS - KILLS_STOP_BEFORE_END:
                # Rather a worker in the middle of a step, best of all one calling the hook.
                try:
                    held = query(cluster, "SELECT worker_id, key FROM workflows_runstep WHERE status = 'RUNNING'")
                except psycopg.Error:
                    held = []
                calling = {w for w, key in held if key == "call"} & set(workers)
                busy = {w for w, _ in held} & set(workers)
                name = rng.choice(sorted(calling or busy or workers))
                workers[name].send_signal(signal.SIGKILL)
                workers[name].wait(10)
                kills[name] = time.time()
                del workers[name]
                replacement = f"r{len(kills)}"
                workers[replacement] = processes.worker(replacement)
                next_kill = now + KILL_EVERY
            time.sleep(0.1)
        faults_over = time.monotonic()
        for thread in loads:
            thread.join(give_up_at - time.monotonic() + 30)

        accepted = {t.run_id: t for t in triggers if t.run_id}
        backlog = open_runs_of(cluster, list(accepted))
        try:
            wait_for(
                lambda: open_runs_of(cluster, list(accepted)) == 0,
                QUIESCENCE_BOUND,
                "every accepted run to finish",
                interval=1.0,
            )
        except AssertionError as exc:
            still_open = query(
                cluster,
                "SELECT r.definition->>'slug', r.status, s.key, s.status, s.worker_id, s.attempts FROM"
                " workflows_workflowrun r JOIN workflows_runstep s ON s.run_id = r.id WHERE r.id::text = ANY(%s)"
                " AND r.status NOT IN ('SUCCESS', 'FAILED') AND s.status NOT IN ('SUCCESS', 'PENDING')",
                [list(accepted)],
            )
            raise AssertionError(f"{exc}\nopen: {still_open[:20]}") from None
        finally:
            approver.halt.set()
        quiescence = time.monotonic() - faults_over

        runs = dict(
            query(
                cluster, "SELECT id::text, status FROM workflows_workflowrun WHERE id::text = ANY(%s)", [list(accepted)]
            )
        )
        attempts = attempts_of(cluster, list(accepted))
        by_step: dict[tuple[str, str], list[tuple[str, str, str, int, str, str, str]]] = defaultdict(list)
        for row in attempts:
            by_step[(row[0], row[2])].append(row)
        repeats = unexplained = 0
        for rows in by_step.values():
            for row in rows[:-1]:
                status, error_type, worker = row[4], row[5], row[6]
                if status == "FAILED":
                    continue  # a retry its policy asked for (test-failure), not a repeated execution
                repeats += 1
                killed = status == "LOST" and error_type == "WorkerLost" and worker in kills
                cut_off = status == "LOST" and error_type == "ConnectionLost"
                unexplained += not (killed or cut_off)
        lost_attempts = sum(row[4] == "LOST" for row in attempts)
        hook_runs = [run_id for run_id, t in accepted.items() if t.workflow == "soak-http"]
        lost_calls = {run_id: sum(1 for r in by_step[(run_id, "call")] if r[4] == "LOST") for run_id in hook_runs}
        extra_calls = {run_id: hook.calls[run_id] - 1 for run_id in hook_runs if hook.calls[run_id] != 1}
        (last,) = query(
            cluster,
            "SELECT r.definition->>'slug', extract(epoch FROM r.finished_at - r.created_at)::int, array_agg("
            "s.key || ':' || s.attempts || ':' || s.infrastructure_attempts || ':' || coalesce(s.ready_at::text, '')"
            " ORDER BY s.ready_at) FROM workflows_workflowrun r JOIN workflows_runstep s ON s.run_id = r.id"
            " WHERE r.id::text = ANY(%s) GROUP BY r.id ORDER BY r.finished_at DESC LIMIT 1",
            [list(accepted)],
        )
        queue_left = query(
            cluster, "SELECT worker_ids FROM django_tasks_database_dbtaskresult WHERE status = 'RUNNING'"
        )
        answers = Counter(status for t in triggers for status in t.answers)
        figures = {
            "load": f"{len(triggers)} triggers of 8 workflows over HTTP in {LOAD_SECONDS} s, 3 workers, "
            "gunicorn 2x4, default settings",
            "faults": f"{len(kills)} x SIGKILL (one every {KILL_EVERY} s), "
            + ", ".join(f"{mode} restart" + (f" held {hold:g} s" if hold else "") for mode, hold, _ in restarts),
            "runs": len(accepted),
            "kills": len(kills),
            "restarts": len(restarts),
            "lost": sum(runs.get(r) != OUTCOME.get(t.workflow, "SUCCESS") for r, t in accepted.items()),
            "stuck": len(accepted) - sum(s in ("SUCCESS", "FAILED", "CANCELLED", "REJECTED") for s in runs.values()),
            "lost_attempts": lost_attempts,
            "duplicates": repeats,
            "duplicates_unexplained": unexplained,
            "duplicate_http_calls": sum(extra_calls.values()),
            "trigger_answers": dict(sorted(answers.items())),
            "approved": approver.approved,
            "open_at_load_end": backlog,
            "quiescence_s": round(quiescence, 1),
            "down_s": [round(down, 1) for _, _, down in restarts],
            "last_to_finish": last,
        }
        record_result("fault-soak", **figures)
        with capsys.disabled():
            print("\n" + soak_table(figures))

        # No 2xx trigger without its run, and one run per Idempotency-Key however often it was sent.
        assert len(runs) == len(accepted)
        assert all(len(t.run_ids) <= 1 for t in triggers)
        assert all(t.run_id for t in triggers), [t.answers for t in triggers if not t.run_id][:5]
        # Every run ended as its workflow defines; nothing is left running anywhere.
        assert figures["lost"] == 0 and figures["stuck"] == 0, [
            (r, t.workflow, runs.get(r))
            for r, t in accepted.items()
            if runs.get(r) != OUTCOME.get(t.workflow, "SUCCESS")
        ][:10]
        assert not query(cluster, "SELECT id FROM workflows_runstep WHERE status IN ('RUNNING', 'READY')")
        assert not [row for row in attempts if row[4] == "RUNNING"]
        # Every repeated execution, and every repeated call to the hook, is an attempt that a killed worker lost
        # (or one cut off from the database, which only an outage longer than the lease would cause).
        assert unexplained == 0
        assert all(hook.calls[r] >= 1 for r in hook_runs)
        assert all(extra <= lost_calls[r] for r, extra in extra_calls.items()), (extra_calls, lost_calls)
        # The queue rows of killed workers were closed with their steps; whatever is left RUNNING is theirs.
        assert all(ids and ids[-1] in kills for (ids,) in queue_left), queue_left
        # The faults happened, and the web tier refused (503) rather than failed while the database was down.
        assert len(kills) >= 3 and len(restarts) == len(RESTARTS)
        assert set(answers) <= {202, 503, 0}, answers
        assert all(w.poll() is None for w in workers.values())
    finally:
        processes.stop_all()
        hook.shutdown()


def soak_table(f: dict[str, Any]) -> str:
    rows = [
        ("runs accepted", f["runs"]),
        ("SIGKILLs", f["kills"]),
        ("database restarts", f"{f['restarts']} (down {', '.join(f'{d:g}' for d in f['down_s'])} s)"),
        ("runs lost / stuck", f"{f['lost']} / {f['stuck']}"),
        ("lost attempts", f["lost_attempts"]),
        ("repeated executions (unexplained)", f"{f['duplicates']} ({f['duplicates_unexplained']})"),
        ("repeated HTTP calls", f["duplicate_http_calls"]),
        ("trigger answers", ", ".join(f"{k}: {v}" for k, v in f["trigger_answers"].items())),
        ("runs still open when the load ended", f["open_at_load_end"]),
        ("time to quiescence", f"{f['quiescence_s']} s"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
