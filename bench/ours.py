"""Workloads on CommandCenter itself: chain-40, noop-3 throughput (with the commits a run costs), idle latency,
worker memory."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from bench.common import commits_read, rss_mib, summary, wait_until, workers
from bench.peers.pgstat import count_commits


def _models(env: dict[str, str] | None = None) -> Any:
    from agents.models import AgentRun
    from workflows.models import TERMINAL_RUN_STATUSES, Workflow, WorkflowRun
    from workflows.services import trigger_workflow

    if env is None or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return AgentRun, TERMINAL_RUN_STATUSES, Workflow, WorkflowRun, trigger_workflow

    def traced(workflow: Any, **kwargs: Any) -> Any:
        # As the API does for an instrumented caller: the run carries a sampled trace context, so the workers
        # trace it (workflow.execute, agent.execute and what the agents do). The driver itself exports nothing.
        trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
        context = {"traceparent": f"00-{trace_id}-{span_id}-01"}
        return trigger_workflow(workflow, trace_id=trace_id, trace_context=context, **kwargs)

    return AgentRun, TERMINAL_RUN_STATUSES, Workflow, WorkflowRun, traced


def _wait_terminal(run_ids: list[Any], timeout: float) -> None:
    from django.db import transaction

    _, terminal, _, WorkflowRun, _ = _models()

    def done() -> bool:
        # Rolled back, not committed: the driver's polling stays out of the commits counted per run.
        with transaction.atomic():
            finished = WorkflowRun.objects.filter(id__in=run_ids, status__in=terminal).count()
            transaction.set_rollback(True)
        return finished == len(run_ids)

    wait_until(done, timeout, 0.005)


def chain(env: dict[str, str], log_dir: Path, repeats: int) -> dict[str, Any]:
    """chain-40 (40 sequential 10 ms steps), trigger -> SUCCESS, one worker."""
    _, _, Workflow, _WorkflowRun, trigger = _models(env)
    workflow = Workflow.objects.get(slug="chain-40")
    durations, statuses = [], []
    with workers(1, env, log_dir):
        for _ in range(repeats + 1):  # the first run warms the worker up and is not counted
            run, _ = trigger(workflow, context={})
            _wait_terminal([run.id], 120)
            run.refresh_from_db()
            statuses.append(run.status)
            durations.append((run.finished_at - run.created_at).total_seconds())
    result = summary(durations[1:])
    result["statuses"] = sorted(set(statuses))
    result["per_step_overhead_ms"] = (result["p50"] / 40 - 0.010) * 1000
    return result


def noop3_batch(env: dict[str, str], log_dir: Path, runs: int, worker_count: int) -> dict[str, Any]:
    """``runs`` runs of noop-3 triggered as fast as possible into ``worker_count`` workers, with the commits per run
    (bench/peers/pgstat.py says how they are counted)."""
    from django.db import connection

    _, _, Workflow, WorkflowRun, trigger = _models(env)
    workflow = Workflow.objects.get(slug="noop-3")
    ids: list[Any] = []

    def batch() -> dict[str, Any]:
        started = time.monotonic()
        ids.extend(trigger(workflow, context={"i": i})[0].id for i in range(runs))
        trigger_seconds = time.monotonic() - started
        _wait_terminal(ids, 600)
        elapsed = time.monotonic() - started
        connection.close()  # its statistics reach pg_stat_database before the "after" reading
        return {"seconds": elapsed, "trigger_seconds": trigger_seconds}

    connection.close()
    measured = count_commits(commits_read(), lambda: workers(worker_count, env, log_dir), batch, runs)
    rows = list(WorkflowRun.objects.filter(id__in=ids).values_list("created_at", "finished_at", "status"))
    latencies = [(f - c).total_seconds() for c, f, _ in rows]
    return {
        "runs": runs,
        "workers": worker_count,
        "runs_per_second": runs / measured["seconds"],
        "seconds": measured["seconds"],
        "trigger_seconds": measured["trigger_seconds"],
        "latency": summary(latencies),
        "statuses": sorted({s for _, _, s in rows}),
        "commits": measured["commits"],
    }


def throughput(env: dict[str, str], log_dir: Path, runs: int, worker_counts: tuple[int, ...]) -> dict[str, Any]:
    """noop-3 x ``runs`` into 1, 2, 4 workers (``noop3_batch`` for each)."""
    return {f"{count}_workers": noop3_batch(env, log_dir, runs, count) for count in worker_counts}


def idle_latency(env: dict[str, str], log_dir: Path, runs: int, rate: float = 1.0) -> dict[str, Any]:
    """At ``rate`` runs/s into one idle worker: trigger -> first step started."""
    AgentRun, _, Workflow, WorkflowRun, trigger = _models(env)
    workflow = Workflow.objects.get(slug="noop-3")
    ids = []
    with workers(1, env, log_dir):
        time.sleep(1.0)  # let the worker settle into its idle wait
        for _ in range(runs):
            tick = time.monotonic()
            ids.append(trigger(workflow, context={})[0].id)
            time.sleep(max(0.0, 1 / rate - (time.monotonic() - tick)))
        _wait_terminal(ids, 60)
    created = dict(WorkflowRun.objects.filter(id__in=ids).values_list("id", "created_at"))
    first: dict[Any, Any] = {}
    for run_id, started in (
        AgentRun.objects.filter(run_id__in=ids).order_by("started_at").values_list("run_id", "started_at")
    ):
        first.setdefault(run_id, started)
    latencies = [(first[i] - created[i]).total_seconds() * 1000 for i in ids]
    return {"unit": "ms", **summary(latencies)}


def worker_memory(env: dict[str, str], log_dir: Path, runs: int) -> dict[str, Any]:
    """RSS of one worker idle, after ``runs`` noop-3 runs, and after as many again (growth check)."""
    _, _, Workflow, _, trigger = _models(env)
    workflow = Workflow.objects.get(slug="noop-3")
    with workers(1, env, log_dir) as procs:
        pid = procs[0].pid
        time.sleep(1.0)
        idle = rss_mib(pid)
        marks = []
        for _ in range(2):
            ids = [trigger(workflow, context={})[0].id for _ in range(runs // 2)]
            _wait_terminal(ids, 900)
            marks.append(rss_mib(pid))
    return {"unit": "MiB", "idle": idle, "after_half": marks[0], "after_all": marks[1], "runs": runs}
