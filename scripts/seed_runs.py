#!/usr/bin/env python
"""Fill the database with many runs (bulk_create) and measure the admin's run list against them.

    .venv/bin/python scripts/seed_runs.py --runs 100000          # seed, then measure
    .venv/bin/python scripts/seed_runs.py --measure-only         # measure what is there
    .venv/bin/python scripts/seed_runs.py --runs 100000 --delete # remove the seeded runs

Runs belong to the synced workflows (run `manage.py sync_workflows workflows/definitions` first), spread over
the last 30 days with a realistic mix of statuses and triggers; each gets its RunStep rows. Seeded runs are
marked with trigger_detail "seed", so --delete removes exactly them. The measurement requests the run list
through Django's test client as a superuser for a few filters, printing the number of queries, the time and
the EXPLAIN ANALYZE of the page's main query.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
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

from django.contrib.auth.models import User  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402

from workflows.models import RunStatus, RunStep, StepStatus, TriggerSource, Workflow, WorkflowRun  # noqa: E402

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
        runs, steps = [], []
        for _ in range(min(batch, total - made)):
            workflow = rng.choice(workflows)
            status = pick(STATUSES, rng)
            created = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
            duration = timedelta(seconds=rng.lognormvariate(1.5, 1.0))
            run = WorkflowRun(
                id=uuid.uuid4(),
                workflow=workflow,
                workflow_version=workflow.version,
                definition=snapshots[workflow.pk],
                status=status,
                trigger=pick(TRIGGERS, rng),
                trigger_detail=SEED_MARK,
                context={"target": f"host-{rng.randrange(500)}", "ticket": f"OPS-{rng.randrange(10_000)}"},
                trace_id=secrets.token_hex(16),
                created_at=created,
                started_at=None if status == RunStatus.PENDING else created + timedelta(milliseconds=30),
                finished_at=created + duration if status in TERMINAL else None,
            )
            runs.append(run)
            nodes = snapshots[workflow.pk]["nodes"]
            for position, (node, step_status) in enumerate(
                zip(nodes, step_statuses(status, len(nodes), rng), strict=True)
            ):
                steps.append(RunStep(run=run, key=node["key"], position=position, status=step_status, attempts=1))
        with transaction.atomic():
            WorkflowRun.objects.bulk_create(runs)
            RunStep.objects.bulk_create(steps)
        made += len(runs)
        rate = made / (time.monotonic() - started)
        print(f"\r{made}/{total} runs ({rate:.0f}/s)", end="", flush=True)
    print()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE workflows_workflowrun; ANALYZE workflows_runstep;")


def measure() -> None:
    setup_test_environment()  # response.context for the row count; "testserver" as an allowed host
    user, _ = User.objects.get_or_create(username="seed-measure", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)
    base = "/admin/workflows/workflowrun/"
    workflow = Workflow.objects.order_by("slug").first()
    pages = [
        ("newest first", base),
        ("page 100", base + "?p=100"),
        ("status FAILED", base + "?status__exact=FAILED"),
        ("trigger alert", base + "?trigger__exact=alert"),
        ("workflow", base + f"?workflow__id__exact={workflow.pk if workflow else 0}"),
        ("last 7 days", base + "?" + urlencode({"created_at__gte": (timezone.now() - timedelta(days=7)).isoformat()})),
        ("search trace id", base + "?q=" + (WorkflowRun.objects.values_list("trace_id", flat=True).first() or "")),
        ("search context", base + "?q=host-42"),
    ]
    client.get(base)  # warm up
    print(f"runs in the database: {WorkflowRun.objects.count()}")
    main_sql = ""
    for label, url in pages:
        with CaptureQueriesContext(connection) as queries:
            begun = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - begun
        assert response.status_code == 200, (url, response.status_code)
        rows = len(response.context["cl"].result_list)
        sql_ms = sum(float(q["time"]) for q in queries.captured_queries) * 1000
        print(
            f"{label:16} {len(queries.captured_queries):2} queries  {sql_ms:6.1f} ms in SQL  "
            f"{elapsed * 1000:6.1f} ms in all  {rows:2} rows  {url}"
        )
        if label == "newest first":
            main_sql = next(
                q["sql"] for q in queries.captured_queries if "steps_total" in q["sql"] or "runstep" in q["sql"]
            )
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN ANALYZE " + main_sql)
        print("\nEXPLAIN ANALYZE of the newest-first page:")
        for (line,) in cursor.fetchall():
            print("  " + line)


def delete() -> None:
    ids = WorkflowRun.objects.filter(trigger_detail=SEED_MARK).values("id")
    steps, _ = RunStep.objects.filter(run_id__in=ids).delete()
    runs, _ = WorkflowRun.objects.filter(trigger_detail=SEED_MARK).delete()
    print(f"deleted {runs} seeded runs and {steps} steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--measure-only", action="store_true")
    parser.add_argument("--delete", action="store_true", help="remove the seeded runs and exit")
    args = parser.parse_args()
    if args.delete:
        delete()
        return
    if not args.measure_only:
        seed(args.runs, args.batch)
    measure()


if __name__ == "__main__":
    main()
