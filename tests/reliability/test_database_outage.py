"""Restart PostgreSQL under load — a private cluster, never the shared server — and kill worker connections.

Every process runs with default settings (pool on, default timeouts and retry policies). While the database
is down the web tier (gunicorn, production settings) answers 503 with a clear body and Retry-After at once,
and /healthz keeps answering; the workers survive and reconnect; every run that was accepted succeeds.
pg_terminate_backend on every connection is recovered from the same way.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.reliability.conftest import (
    BASE_ENV,
    PgCluster,
    Processes,
    http,
    record_result,
    scaled,
    setup_database,
    start_web,
    wait_for,
)

pytestmark = [pytest.mark.slow]

DEFINITION = """
agents:
  - {slug: outage-sleep, type: sleep}
workflow:
  slug: outage
  name: outage
  nodes:
    - key: one
      agent: outage-sleep
      inputs: {seconds: "{{ context.s | default(0.2) }}"}
    - key: two
      agent: outage-sleep
      depends_on: [one]
      inputs: {seconds: 0.2}
"""


@pytest.fixture(scope="module")
def token(cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    definition = tmp_path_factory.mktemp("outage") / "outage.yaml"
    definition.write_text(textwrap.dedent(DEFINITION))
    return setup_database(cluster, definition)["load"]


class Prober(threading.Thread):
    """GETs one path every ``every`` seconds, as an orchestrator's probe would; records (time, status, seconds,
    Retry-After)."""

    def __init__(self, url: str, token: str = "", every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.every = url, token, every
        self.answers: list[tuple[float, int, float, str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            request = urllib.request.Request(self.url)  # noqa: S310 - http://127.0.0.1 only
            if self.token:
                request.add_header("Authorization", f"Bearer {self.token}")
            started = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310 - our own server
                    status, retry_after = response.status, response.headers.get("Retry-After", "")
            except urllib.error.HTTPError as exc:
                status, retry_after = exc.code, exc.headers.get("Retry-After", "")
            except (urllib.error.URLError, OSError):
                status, retry_after = 0, ""
            self.answers.append((started, status, time.monotonic() - started, retry_after))
            self.halt.wait(self.every)

    def between(self, start: float, end: float) -> list[tuple[float, int, float, str]]:
        """The answers to requests sent after ``start`` and answered before ``end``."""
        return [a for a in self.answers if start <= a[0] and a[0] + a[2] <= end]


def unfinished(cluster: PgCluster, ids: list[str]) -> str:
    """The steps of runs that have not succeeded, with their queue tasks: what a failed wait shows."""
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/commandcenter", connect_timeout=5) as c:
        steps = c.execute(
            "SELECT r.id::text, r.status, s.id, s.key, s.status, s.attempts, s.ready_at, s.lease_expires_at"
            " FROM workflows_workflowrun r JOIN workflows_runstep s ON s.run_id = r.id"
            " WHERE r.id::text = ANY(%s) AND r.status <> 'SUCCESS' ORDER BY r.id, s.id",
            [ids],
        ).fetchall()
        tasks = c.execute(
            "SELECT args_kwargs, status, enqueued_at, started_at, worker_ids FROM django_tasks_database_dbtaskresult"
            " WHERE status NOT IN ('SUCCESSFUL') ORDER BY enqueued_at DESC LIMIT 40"
        ).fetchall()
    return "steps:\n" + "\n".join(map(str, steps[:40])) + "\nunfinished tasks:\n" + "\n".join(map(str, tasks))


def run_statuses(cluster: PgCluster, ids: list[str]) -> dict[str, str]:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/commandcenter", connect_timeout=5) as c:
        rows = c.execute("SELECT id::text, status FROM workflows_workflowrun WHERE id::text = ANY(%s)", [ids])
        return dict(rows.fetchall())


class Load(threading.Thread):
    """Triggers a run every ``every`` seconds until stopped; records each answer with its time."""

    def __init__(self, base: str, token: str, every: float = 0.15) -> None:
        super().__init__(daemon=True)
        self.base, self.token, self.every = base, token, every
        self.answers: list[tuple[float, int, str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            n += 1
            status, body = http("POST", f"{self.base}/api/workflows/outage/trigger", self.token, {"context": {"n": n}})
            self.answers.append((time.monotonic(), status, body))
            self.halt.wait(self.every)

    def accepted(self) -> list[str]:
        return [json.loads(body)["id"] for _, status, body in self.answers if status == 202]


@pytest.mark.timeout(400)
def test_postgres_restart_under_load(cluster: PgCluster, token: str, tmp_path: Path) -> None:
    processes = Processes(logs=tmp_path, url=cluster.url, env=dict(BASE_ENV))
    try:
        base = start_web(processes, cluster, tmp_path)
        workers = [processes.worker(f"pg{i}") for i in range(2)]
        load = Load(base, token)
        load.start()
        healthz, reads = Prober(base + "/healthz"), Prober(base + "/api/runs?limit=5", token)
        healthz.start()
        reads.start()
        wait_for(lambda: sum(s == 202 for _, s, _ in load.answers) >= 10, 60, "runs to be accepted before the outage")

        cluster.stop("fast")
        down_at = time.monotonic()
        outage = scaled(6, 15)
        during: list[tuple[str, int, str]] = []
        while time.monotonic() - down_at < outage:
            for path in ("/api/runs", "/readyz", "/admin/login/"):
                # The console as a returning browser opens it, with its session cookie: reading the session
                # needs the database (without one, the sign-in page needs none and answers 200).
                cookie = {"Cookie": "sessionid=" + "s" * 32} if path.startswith("/admin/") else {}
                status, body = http("GET", base + path, token, timeout=20, headers=cookie)
                during.append((path, status, body))
            time.sleep(0.5)
        starting_at = time.monotonic()
        cluster.start()
        up_at = time.monotonic()
        first_ok = wait_for(lambda: http("GET", base + "/readyz", timeout=10)[0] == 200, 60, "/readyz after restart")
        time.sleep(scaled(4, 10))
        for thread in (load, healthz, reads):
            thread.halt.set()
            thread.join(30)

        accepted = load.accepted()
        done = wait_for(
            lambda: all(s in ("SUCCESS", "FAILED", "CANCELLED") for s in run_statuses(cluster, accepted).values()),
            scaled(120, 300),
            "every accepted run to finish",
            interval=0.5,
        )
        statuses = run_statuses(cluster, accepted)
        answered_during = [a for a in load.answers if down_at <= a[0] <= up_at]
        first_accepted = min((t for t, s, _ in load.answers if s == 202 and t > up_at), default=None)
        figures: dict[str, Any] = {
            "load": f"{len(load.answers)} triggers over HTTP (gunicorn, 2 processes x 4 threads), 2 workers",
            "faults": f"PostgreSQL stopped (fast) for {outage} s, then started",
            "accepted": len(accepted),
            "refused_during_outage": sum(s == 503 for _, s, _ in answered_during),
            "other_answers_during_outage": sorted({s for _, s, _ in answered_during if s != 503}),
            "lost": len(accepted) - len(statuses) + sum(s != "SUCCESS" for s in statuses.values()),
            "stuck": sum(s not in ("SUCCESS", "FAILED", "CANCELLED") for s in statuses.values()),
            "web_ready_after_s": round(first_ok, 1),
            "first_202_after_s": round(first_accepted - up_at, 1) if first_accepted else None,
            "healthz_max_s": round(max(s for _, _, s, _ in healthz.between(down_at, time.monotonic())), 2),
            "reads_during_outage_max_s": round(max(s for _, _, s, _ in reads.between(down_at, starting_at)), 2),
            "all_runs_done_after_s": round(time.monotonic() - up_at, 1),
            "workers_alive": sum(w.poll() is None for w in workers),
        }
        record_result("postgres-restart", **figures)
        print(figures, done)

        # While it was down: 503 with a clear, short body and Retry-After, at once; never a 500 or a traceback.
        assert during, "no request was made during the outage"
        bad = [(p, s, b[:200]) for p, s, b in during if "Traceback" in b or not (s == 503 and "database" in b.lower())]
        assert bad == []
        refused = reads.between(down_at, starting_at)
        assert refused and {(s, retry) for _, s, _, retry in refused} == {(503, "5")}
        # Nobody waited on the database for long, so /healthz, which needs none, never waited behind them
        # and never missed an orchestrator's 2 s probe.
        assert figures["reads_during_outage_max_s"] < 3.0
        assert {s for _, s, _, _ in healthz.answers} == {200}
        assert figures["healthz_max_s"] < 2.0
        assert figures["first_202_after_s"] is not None and figures["first_202_after_s"] < 5.0
        api_bodies = [json.loads(b) for p, s, b in during if p == "/api/runs"]
        assert all(body["error"] == "database_unavailable" for body in api_bodies)
        assert all(s in (202, 503) for _, s, _ in load.answers), sorted({s for _, s, _ in load.answers})
        assert figures["refused_during_outage"] > 0
        # After it: the workers are still there, and every accepted run succeeded.
        assert figures["workers_alive"] == 2, processes.log("worker-pg0")[-3000:] + processes.log("worker-pg1")[-3000:]
        assert figures["lost"] == 0 and figures["stuck"] == 0, statuses
    finally:
        processes.stop_all()


@pytest.mark.timeout(300)
def test_terminated_worker_connections_are_recovered(cluster: PgCluster, token: str, tmp_path: Path) -> None:
    processes = Processes(logs=tmp_path, url=cluster.url, env=dict(BASE_ENV))
    admin = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
    try:
        base = start_web(processes, cluster, tmp_path)
        workers = [processes.worker(f"tb{i}") for i in range(2)]
        load = Load(base, token, every=0.1)
        load.start()
        wait_for(lambda: sum(s == 202 for _, s, _ in load.answers) >= 5, 60, "runs to be accepted")
        terminated = 0
        for _ in range(scaled(4, 10)):
            time.sleep(1.5)
            with psycopg.connect(admin, autocommit=True) as conn:
                # Every backend of the service's database but this one: the workers' (task loop, maintenance,
                # LISTEN) and the web tier's pooled connections alike.
                rows = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = 'commandcenter' AND pid <> pg_backend_pid()"
                    " AND client_port IS NOT NULL"
                ).fetchall()
                for (pid,) in rows:
                    conn.execute("SELECT pg_terminate_backend(%s)", [pid])
                terminated += len(rows)
        load.halt.set()
        load.join(30)
        accepted = load.accepted()
        start = time.monotonic()
        try:
            wait_for(
                lambda: (
                    all(s == "SUCCESS" for s in run_statuses(cluster, accepted).values())
                    and len(run_statuses(cluster, accepted)) == len(accepted)
                ),
                120,
                "every accepted run to succeed",
                interval=0.5,
            )
        except AssertionError as exc:
            logs = "".join(processes.log(f"worker-tb{i}")[-2000:] for i in range(2))
            raise AssertionError(f"{exc}\n{unfinished(cluster, accepted)}\nworker logs:\n{logs}") from None
        figures = {
            "load": f"{len(load.answers)} triggers over HTTP, 2 workers",
            "faults": f"pg_terminate_backend on all service connections ({terminated}), {scaled(4, 10)} rounds",
            "accepted": len(accepted),
            "answers": sorted({s for _, s, _ in load.answers}),
            "lost": 0,
            "stuck": 0,
            "all_runs_done_after_s": round(time.monotonic() - start, 1),
            "workers_alive": sum(w.poll() is None for w in workers),
        }
        record_result("pg-terminate-backend", **figures)
        print(figures)
        assert terminated > 0
        assert figures["workers_alive"] == 2
        assert all(s in (202, 503) for _, s, _ in load.answers), figures["answers"]
    finally:
        processes.stop_all()


def step_counts(cluster: PgCluster) -> dict[str, int]:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/commandcenter", connect_timeout=5) as c:
        rows = c.execute("SELECT status, count(*) FROM workflows_runstep GROUP BY status").fetchall()
    return dict(rows)


def attempt_counts(cluster: PgCluster, ids: list[str]) -> dict[str, int]:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/commandcenter", connect_timeout=5) as c:
        rows = c.execute(
            "SELECT status, count(*) FROM agents_agentrun WHERE run_id::text = ANY(%s) GROUP BY status", [ids]
        ).fetchall()
    return dict(rows)


@pytest.mark.timeout(300)
def test_a_quick_restart_under_live_workers_fails_no_run_and_leaves_no_dead_connection(
    cluster: PgCluster, token: str, tmp_path: Path
) -> None:
    """The reproducer: `pg_ctl restart -m fast` (down well under a second) while three workers are in the middle
    of steps; every setting at its default. Every run succeeds, and the web tier's pool hands out no connection
    that died with the old server."""
    processes = Processes(logs=tmp_path, url=cluster.url, env=dict(BASE_ENV))
    try:
        base = start_web(processes, cluster, tmp_path)
        workers = [processes.worker(f"rs{i}") for i in range(3)]
        with ThreadPoolExecutor(8) as pool:  # several pooled connections in each gunicorn process
            assert set(pool.map(lambda _: http("GET", f"{base}/api/runs", token)[0], range(16))) == {200}
        ids = []
        for n in range(12):  # each run: a 3 s step (its lease is renewed at 2 s), then a 0.2 s one
            status, body = http("POST", f"{base}/api/workflows/outage/trigger", token, {"context": {"n": n, "s": 3}})
            assert status == 202, body
            ids.append(json.loads(body)["id"])
        wait_for(lambda: step_counts(cluster).get("RUNNING", 0) >= 3, 60, "three workers to be in a step")
        # Over before the first lease renewal of the steps that started first: their workers' connections died
        # with the old server, so that renewal meets a dead connection however quick the restart was.
        down = cluster.restart("fast")
        with ThreadPoolExecutor(4) as pool:
            reads = list(pool.map(lambda _: http("GET", f"{base}/api/runs?limit=5", token), range(30)))
        took = wait_for(
            lambda: all(s in ("SUCCESS", "FAILED") for s in run_statuses(cluster, ids).values()),
            120,
            "every run to finish",
            interval=0.5,
        )
        statuses = run_statuses(cluster, ids)
        attempts = attempt_counts(cluster, ids)
        figures = {
            "load": "12 runs (3 s step, then 0.2 s) over HTTP, 3 workers, gunicorn 2x4, default settings",
            "faults": f"pg_ctl restart -m fast under the running steps, down {down:.1f} s",
            "runs": len(ids),
            "lost": sum(s != "SUCCESS" for s in statuses.values()),
            "stuck": 0,
            "duplicates": sum(attempts.values()) - 2 * len(ids),
            "attempts": attempts,
            "reads_after_restart": sorted({status for status, _ in reads}),
            "all_runs_done_after_s": round(took, 1),
            "workers_alive": sum(w.poll() is None for w in workers),
        }
        record_result("postgres-quick-restart", **figures)
        print(figures)
        assert set(statuses.values()) == {"SUCCESS"}, (statuses, unfinished(cluster, ids))
        # No attempt was lost or run twice: the workers renewed, started and recorded through the restart.
        assert attempts == {"SUCCESS": 2 * len(ids)}
        assert figures["workers_alive"] == 3
        assert [s for s, _ in reads] == [200] * 30, [b[:200] for s, b in reads if s != 200]
    finally:
        processes.stop_all()
