#!/usr/bin/env python
"""Fill the database with many runs (bulk_create) and time the console's pages against them.

    .venv/bin/python scripts/seed_runs.py --runs 100000          # seed, then measure
    .venv/bin/python scripts/seed_runs.py --measure-only         # measure what is there
    .venv/bin/python scripts/seed_runs.py --delete               # remove the seeded runs

Runs belong to the synced workflows (run `manage.py sync_workflows workflows/definitions` first), spread over
the last 30 days with a realistic mix of statuses and triggers; each gets its RunStep rows, an attempt for every
step that started (failed steps three, as their retry policy allows) and its status transitions. Seeded runs are
marked with trigger_detail "seed", so --delete removes exactly them.

The measurement requests each page through Django's test client as a superuser, in this process, so what it
times is the server's work for the request (middleware, queries, templates), not a network: each page is asked
--repeat times after one warm-up request, and the median and the slowest are printed, with the number of
queries and the time in SQL of the warm-up (counted on that request only, so that the timed ones run as in
production). Pages: the run list (newest first, a later page), filtered lists, searches
(a whole trace id, the 8-character prefixes the list shows, text in the context), the run page of a failed run
and the live refreshes (X-Console-Live) of the run page and the list. The EXPLAIN ANALYZE of the list's main
query follows.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from agents.models import AgentRun  # noqa: E402
from workflows.models import (  # noqa: E402
    RunStatus,
    RunStep,
    RunTransition,
    StepStatus,
    TriggerSource,
    Workflow,
    WorkflowRun,
)

SEED_MARK = "seed"
STATUSES = [
    (RunStatus.SUCCESS, 80),
    (RunStatus.FAILED, 10),
    (RunStatus.CANCELLED, 3),
    (RunStatus.REJECTED, 2),
    (RunStatus.RUNNING, 3),
    (RunStatus.WAITING_APPROVAL, 1),
    (RunStatus.PENDING, 1),
]
TRIGGERS = [(TriggerSource.API, 70), (TriggerSource.ALERT, 20), (TriggerSource.ADMIN, 7), (TriggerSource.RERUN, 3)]
TERMINAL = {RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.REJECTED}
ATTEMPTS = {StepStatus.SUCCESS: ["SUCCESS"], StepStatus.FAILED: ["FAILED"] * 3, StepStatus.RUNNING: ["RUNNING"]}


def pick[T](weighted: list[tuple[T, int]], rng: random.Random) -> T:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def step_statuses(status: RunStatus, count: int, rng: random.Random) -> list[StepStatus]:
    if status == RunStatus.SUCCESS:
        return [StepStatus.SUCCESS] * count
    done = rng.randrange(count)
    rest = {
        RunStatus.FAILED: StepStatus.FAILED,
        RunStatus.CANCELLED: StepStatus.CANCELLED,
        RunStatus.REJECTED: StepStatus.CANCELLED,
        RunStatus.RUNNING: StepStatus.RUNNING,
        RunStatus.WAITING_APPROVAL: StepStatus.WAITING_APPROVAL,
        RunStatus.PENDING: StepStatus.READY,
    }[status]
    return [StepStatus.SUCCESS] * done + [rest] + [StepStatus.PENDING] * (count - done - 1)


def seed(total: int, batch: int) -> None:
    workflows = [w for w in Workflow.objects.all() if w.slug != "chain-40"] or list(Workflow.objects.all())
    if not workflows:
        sys.exit("No workflows: run `manage.py sync_workflows workflows/definitions` first.")
    snapshots = {w.pk: w.snapshot() for w in workflows}
    rng = random.Random(42)
    now = timezone.now()
    started = time.monotonic()
    made = 0
    while made < total:
        runs, steps, attempts, transitions = [], [], [], []
        for _ in range(min(batch, total - made)):
            workflow = rng.choice(workflows)
            status = pick(STATUSES, rng)
            created = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
            duration = timedelta(seconds=rng.lognormvariate(1.5, 1.0))
            begun = None if status == RunStatus.PENDING else created + timedelta(milliseconds=30)
            finished = created + duration if status in TERMINAL else None
            trace_id = secrets.token_hex(16)
            error = ""
            if status == RunStatus.FAILED:
                error = f"step 'x' failed after 3 attempts: AgentError: host-{rng.randrange(500)} did not answer"
            run = WorkflowRun(
                id=uuid.uuid4(),
                workflow=workflow,
                workflow_version=workflow.version,
                definition=snapshots[workflow.pk],
                status=status,
                trigger=pick(TRIGGERS, rng),
                trigger_detail=SEED_MARK,
                context={"target": f"host-{rng.randrange(500)}", "ticket": f"OPS-{rng.randrange(10_000)}"},
                trace_id=trace_id,
                error=error,
                created_at=created,
                started_at=begun,
                finished_at=finished,
            )
            runs.append(run)
            transitions.append(RunTransition(run=run, from_status="", to_status=RunStatus.PENDING, at=created))
            if begun:
                transitions.append(
                    RunTransition(run=run, from_status=RunStatus.PENDING, to_status=RunStatus.RUNNING, at=begun)
                )
            if status != RunStatus.RUNNING and begun:
                transitions.append(
                    RunTransition(run=run, from_status=RunStatus.RUNNING, to_status=status, at=finished or begun)
                )
            nodes = snapshots[workflow.pk]["nodes"]
            moment = begun or created
            share = (duration / max(len(nodes), 1)) if begun else timedelta(0)
            for position, (node, step_status) in enumerate(
                zip(nodes, step_statuses(status, len(nodes), rng), strict=True)
            ):
                tries = ATTEMPTS.get(step_status, [])
                step = RunStep(
                    run=run,
                    key=node["key"],
                    position=position,
                    status=step_status,
                    attempts=len(tries),
                    ready_at=moment if tries else None,
                    started_at=moment if tries else None,
                    finished_at=moment + share if tries and step_status != StepStatus.RUNNING else None,
                )
                steps.append(step)
                for number, outcome in enumerate(tries, start=1):
                    attempts.append(
                        AgentRun(
                            run=run,
                            step=step,
                            attempt=number,
                            agent_type=node["agent_type"],
                            status=outcome,
                            input={"target": run.context["target"]},
                            output={"ok": True} if outcome == "SUCCESS" else None,
                            error_type="AgentError" if outcome == "FAILED" else "",
                            error_message="did not answer" if outcome == "FAILED" else "",
                            worker_id="seed:1",
                            started_at=moment + share * (number - 1) / len(tries),
                            finished_at=None if outcome == "RUNNING" else moment + share * number / len(tries),
                            duration_seconds=None if outcome == "RUNNING" else share.total_seconds() / len(tries),
                        )
                    )
                moment += share
        with transaction.atomic():
            WorkflowRun.objects.bulk_create(runs)
            RunStep.objects.bulk_create(steps)
            AgentRun.objects.bulk_create(attempts)
            RunTransition.objects.bulk_create(transitions)
        made += len(runs)
        rate = made / (time.monotonic() - started)
        print(f"\r{made}/{total} runs ({rate:.0f}/s)", end="", flush=True)
    print()
    # What autovacuum does to a table in use: statistics for the planner, and the visibility map that lets
    # counts be answered from an index alone.
    with connection.cursor() as cursor:
        for table in ("workflows_workflowrun", "workflows_runstep", "agents_agentrun", "workflows_runtransition"):
            cursor.execute(f"VACUUM ANALYZE {table}")


def measure(repeat: int) -> None:
    # Not setup_test_environment(): its template instrumentation would be timed too.
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    user, _ = User.objects.get_or_create(username="seed-measure", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)
    base = "/admin/workflows/workflowrun/"
    workflow = Workflow.objects.order_by("slug").first()
    sample = WorkflowRun.objects.filter(trigger_detail=SEED_MARK).order_by("-created_at")[500:501].first()
    failed = (
        WorkflowRun.objects.filter(trigger_detail=SEED_MARK, status=RunStatus.FAILED).order_by("-created_at").first()
    )
    if sample is None or failed is None:
        sys.exit("No seeded runs: seed first (--runs N).")
    week = (timezone.now() - timedelta(days=7)).isoformat()
    live = {"X-Console-Live": "1"}
    pages = [
        ("list: newest first", base, {}),
        ("list: page 100", base + "?p=100", {}),
        ("filter: status Failed", base + "?status__exact=FAILED", {}),
        ("filter: trigger Alert", base + "?trigger__exact=alert", {}),
        ("filter: one workflow", base + f"?workflow__id__exact={workflow.pk if workflow else 0}", {}),
        ("filter: last 7 days", base + "?" + urlencode({"created_at__gte": week}), {}),
        ("filter: Failed, 7 days", base + "?" + urlencode({"status__exact": "FAILED", "created_at__gte": week}), {}),
        ("search: trace id", base + "?q=" + sample.trace_id, {}),
        ("search: trace prefix", base + "?" + urlencode({"q": sample.trace_id[:8] + "…"}), {}),
        ("search: run id prefix", base + "?q=" + str(sample.pk)[:8], {}),
        ("search: context text", base + "?q=host-42", {}),
        ("run page (failed run)", base + f"{failed.pk}/change/", {}),
        ("run page, live refresh", base + f"{failed.pk}/change/", live),
        ("list, live refresh", base, live),
    ]
    print(
        f"runs: {WorkflowRun.objects.count()}, steps: {RunStep.objects.count()}, attempts: {AgentRun.objects.count()}; "
        f"each page {repeat} times after a warm-up; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'page':24} {'queries':>7} {'SQL ms':>7} {'median ms':>9} {'max ms':>7} {'rows':>4}")
    for label, url, headers in pages:
        with CaptureQueriesContext(connection) as queries:  # the warm-up counts the queries
            response = client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.status_code)
        # Read now: the log is the connection's, and a later request may start it afresh.
        count, sql = len(queries.captured_queries), sum(float(q["time"]) for q in queries.captured_queries) * 1000
        times = []
        for _ in range(repeat):
            begun = time.perf_counter()
            response = client.get(url, headers=headers)
            times.append((time.perf_counter() - begun) * 1000)
        rows = response.content.decode().count('class="action-select"') or ""
        print(f"{label:24} {count:7} {sql:7.1f} {statistics.median(times):9.1f} {max(times):7.1f} {rows:>4}")
    with CaptureQueriesContext(connection) as queries:
        client.get(base)
    main_sql = next(q["sql"] for q in queries.captured_queries if "error_excerpt_text" in q["sql"])
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN ANALYZE " + main_sql)
        print("\nEXPLAIN ANALYZE of the newest-first page:")
        for (line,) in cursor.fetchall():
            print("  " + line)


def delete() -> None:
    ids = WorkflowRun.objects.filter(trigger_detail=SEED_MARK).values("id")
    attempts, _ = AgentRun.objects.filter(run_id__in=ids).delete()
    transitions, _ = RunTransition.objects.filter(run_id__in=ids).delete()
    steps, _ = RunStep.objects.filter(run_id__in=ids).delete()
    runs, _ = WorkflowRun.objects.filter(trigger_detail=SEED_MARK).delete()
    print(f"deleted {runs} seeded runs, {steps} steps, {attempts} attempts and {transitions} transitions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=7, help="requests per page after the warm-up")
    parser.add_argument("--measure-only", action="store_true")
    parser.add_argument("--delete", action="store_true", help="remove the seeded runs and exit")
    args = parser.parse_args()
    if args.delete:
        delete()
        return
    if not args.measure_only:
        seed(args.runs, args.batch)
    measure(args.repeat)


if __name__ == "__main__":
    main()
