"""The runner in one process: DAG order, retries, timeouts, cancellation, leases and the reaper."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from agents.models import Agent, AgentRun
from tests.conftest import finish, work
from tests.workflows.helpers import define
from workflows import runner
from workflows.models import RunStatus, RunStep, StepStatus, WorkflowRun
from workflows.runner import attempt as attempt_module
from workflows.runner import housekeeping as maintenance_module
from workflows.services import trigger_workflow

AGENTS = [
    {"slug": "t-echo", "type": "echo"},
    {"slug": "t-sleep", "type": "sleep"},
    {"slug": "t-flaky", "type": "flaky"},
    {"slug": "t-fail", "type": "fail"},
]


def attempts(run: WorkflowRun) -> list[tuple[str, int, str]]:
    return list(run.attempts.order_by("started_at", "id").values_list("step__key", "attempt", "status"))


@pytest.mark.django_db
def test_steps_run_in_dag_order_and_outputs_flow_downstream(tmp_path: Path) -> None:
    wf = define(
        tmp_path,
        "diamond",
        [
            {"key": "a", "agent": "t-echo", "inputs": {"host": "{{ context.host }}"}},
            {"key": "b", "agent": "t-echo", "depends_on": ["a"], "inputs": {"v": "b-{{ steps.a.output.host }}"}},
            {"key": "c", "agent": "t-echo", "depends_on": ["a"], "inputs": {"v": "c-{{ steps.a.output.host }}"}},
            {
                "key": "d",
                "agent": "t-echo",
                "depends_on": ["b", "c"],
                "inputs": {"both": ["{{ steps.b.output.v }}", "{{ steps.c.output.v }}"]},
            },
        ],
        AGENTS,
    )
    run, created = trigger_workflow(wf, context={"host": "db01"})
    assert created and run.status == RunStatus.PENDING
    run = finish(run)
    assert run.status == RunStatus.SUCCESS
    order = [key for key, _, _ in attempts(run)]
    assert order[0] == "a" and order[-1] == "d" and set(order[1:3]) == {"b", "c"}
    d = run.steps.get(key="d")
    assert d.output == {"both": ["b-db01", "c-db01"]}
    assert run.attempts.get(step__key="d").input == {"both": ["b-db01", "c-db01"]}
    assert [t for _, t in run.transitions.values_list("from_status", "to_status")] == ["PENDING", "RUNNING", "SUCCESS"]


@pytest.mark.django_db
def test_a_chain_continues_inline_without_a_task_per_step(tmp_path: Path) -> None:
    nodes = [{"key": "s1", "agent": "t-echo"}] + [
        {"key": f"s{i}", "agent": "t-echo", "depends_on": [f"s{i - 1}"]} for i in range(2, 6)
    ]
    run, _ = trigger_workflow(define(tmp_path, "chain5", nodes, AGENTS), context={})
    run = finish(run)
    assert run.status == RunStatus.SUCCESS
    # One task started the chain; every later step was claimed inline by the worker that finished the previous one.
    assert DBTaskResult.objects.count() == 1
    assert run.attempts.count() == 5


@pytest.mark.django_db
def test_parallel_branches_are_queued_for_other_workers(tmp_path: Path) -> None:
    nodes = [{"key": "root", "agent": "t-echo"}] + [
        {"key": f"b{i}", "agent": "t-echo", "depends_on": ["root"]} for i in range(4)
    ]
    run, _ = trigger_workflow(define(tmp_path, "fan", nodes, AGENTS), context={})
    work(lambda: RunStep.objects.filter(run=run, key="root", status=StepStatus.SUCCESS).exists())
    run = finish(run)
    assert run.status == RunStatus.SUCCESS
    # root's task + one task for each branch but the one continued inline
    assert DBTaskResult.objects.count() == 1 + 3


@pytest.mark.django_db
def test_a_flaky_step_is_retried_with_backoff_until_it_succeeds(tmp_path: Path) -> None:
    wf = define(
        tmp_path,
        "retry",
        [
            {
                "key": "f",
                "agent": "t-flaky",
                "inputs": {"fail_times": 2},
                "retry": {"max_attempts": 3, "backoff_seconds": 0.2, "backoff_max_seconds": 1, "jitter": 0},
            }
        ],
        AGENTS,
    )
    run = finish(trigger_workflow(wf, context={})[0])
    assert run.status == RunStatus.SUCCESS
    assert attempts(run) == [("f", 1, "FAILED"), ("f", 2, "FAILED"), ("f", 3, "SUCCESS")]
    rows = list(run.attempts.order_by("attempt"))
    gaps = []
    for earlier, later in itertools.pairwise(rows):
        assert earlier.finished_at is not None
        gaps.append((later.started_at - earlier.finished_at).total_seconds())
    # exponential: 0.2 s then 0.4 s (deferred tasks; never earlier than the backoff)
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4
    assert rows[0].error_type == "AgentError" and "attempt 1" in rows[0].error_message


@pytest.mark.django_db
def test_a_step_that_keeps_failing_fails_the_run_after_max_attempts(tmp_path: Path) -> None:
    wf = define(
        tmp_path,
        "doomed",
        [
            {"key": "ok", "agent": "t-echo"},
            {
                "key": "bad",
                "agent": "t-fail",
                "inputs": {"message": "disk full"},
                "retry": {"max_attempts": 2, "backoff_seconds": 0.05},
            },
            {"key": "after", "agent": "t-echo", "depends_on": ["bad"]},
        ],
        AGENTS,
    )
    run = finish(trigger_workflow(wf, context={})[0])
    assert run.status == RunStatus.FAILED
    assert run.error == "step 'bad' failed after 2 attempts: AgentError: disk full"
    assert [s for _, _, s in attempts(run) if _ == 0] == []
    assert run.attempts.filter(step__key="bad").count() == 2
    assert run.steps.get(key="after").status == StepStatus.CANCELLED
    assert not run.attempts.filter(step__key="after").exists()


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = {"backoff_seconds": 1.0, "backoff_max_seconds": 5.0, "jitter": 0.0}
    assert [runner.backoff_delay(policy, n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    jittered = [runner.backoff_delay({**policy, "jitter": 0.5}, 2) for _ in range(200)]
    assert min(jittered) >= 1.0 and max(jittered) <= 3.0 and len(set(jittered)) > 100


@pytest.mark.django_db
def test_a_permanent_failure_is_not_retried(tmp_path: Path) -> None:
    wf = define(
        tmp_path,
        "perm",
        [{"key": "p", "agent": "t-fail", "inputs": {"permanent": True}, "retry": {"max_attempts": 5}}],
        AGENTS,
    )
    run = finish(trigger_workflow(wf, context={})[0])
    assert run.status == RunStatus.FAILED and run.attempts.count() == 1


@pytest.mark.django_db
def test_a_step_over_its_timeout_is_stopped_and_recorded(tmp_path: Path) -> None:
    wf = define(
        tmp_path, "slow", [{"key": "s", "agent": "t-sleep", "inputs": {"seconds": 30}, "timeout_seconds": 0.3}], AGENTS
    )
    started = time.monotonic()
    run = finish(trigger_workflow(wf, context={})[0])
    assert time.monotonic() - started < 5
    assert run.status == RunStatus.FAILED
    attempt = run.attempts.get()
    assert attempt.status == AgentRun.Status.TIMED_OUT and attempt.error_type == "StepTimeout"
    assert "timeout of 0.3s" in attempt.error_message


@pytest.mark.django_db
def test_a_missing_reference_fails_the_step_naming_it(tmp_path: Path) -> None:
    wf = define(tmp_path, "ref", [{"key": "e", "agent": "t-echo", "inputs": {"h": "{{ context.host }}"}}], AGENTS)
    run = finish(trigger_workflow(wf, context={"other": 1})[0])
    assert run.status == RunStatus.FAILED
    attempt = run.attempts.get()
    assert attempt.error_type == "TemplateError"
    assert attempt.error_message == "missing reference 'context.host' in inputs.h"


@pytest.mark.django_db
def test_a_disabled_agent_fails_the_step_clearly(tmp_path: Path) -> None:
    wf = define(tmp_path, "dis", [{"key": "e", "agent": "t-echo"}], AGENTS)
    Agent.objects.filter(slug="t-echo").update(enabled=False)
    run = finish(trigger_workflow(wf, context={})[0])
    assert run.status == RunStatus.FAILED and "agent 't-echo' is disabled" in run.error


@pytest.mark.django_db
def test_a_duplicate_delivery_does_not_run_a_step_twice(tmp_path: Path) -> None:
    wf = define(tmp_path, "dup", [{"key": "e", "agent": "t-echo"}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    step = run.steps.get()
    runner.enqueue_step(step.id)
    runner.enqueue_step(step.id)
    run = finish(run)
    work()
    assert run.status == RunStatus.SUCCESS and run.attempts.count() == 1


@pytest.mark.django_db
def test_the_reaper_recovers_a_step_whose_worker_died_without_using_its_only_attempt(tmp_path: Path) -> None:
    wf = define(tmp_path, "reap", [{"key": "e", "agent": "t-echo"}], AGENTS)  # max_attempts: 1, the default
    run, _ = trigger_workflow(wf, context={})
    step = run.steps.get()
    assert runner.claim(step.id, "gone-host:1")
    RunStep.objects.filter(id=step.id).update(lease_expires_at=step.ready_at)  # long expired
    assert runner.reap_expired_leases() == 1
    step.refresh_from_db()
    assert step.status == StepStatus.READY
    assert (step.attempts, step.attempt_offset, step.infrastructure_attempts) == (1, 1, 1)
    run = finish(run)
    assert run.status == RunStatus.SUCCESS
    lost, ok = run.attempts.order_by("attempt")
    assert (lost.status, lost.worker_id, lost.error_type) == ("LOST", "gone-host:1", "WorkerLost")
    assert ok.status == "SUCCESS" and ok.attempt == 2


@pytest.mark.django_db
def test_a_step_lost_more_often_than_the_infrastructure_budget_allows_fails_saying_so(
    tmp_path: Path, settings: Any
) -> None:
    settings.RUNNER_INFRASTRUCTURE_RETRIES = 2
    wf = define(tmp_path, "reap1", [{"key": "e", "agent": "t-echo", "retry": {"max_attempts": 5}}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    step = run.steps.get()
    delays = []
    for n in range(3):
        later = timezone.now() + timedelta(minutes=5)  # past any backoff
        assert runner.claim(step.id, f"gone-host:{n}", now=later)
        RunStep.objects.filter(id=step.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert runner.reap_expired_leases() == 1
        step.refresh_from_db()
        lost = run.attempts.get(attempt=n + 1)
        if step.run_after is not None and lost.finished_at is not None:
            delays.append((step.run_after - lost.finished_at).total_seconds())
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and step.status == StepStatus.FAILED
    assert "3 of its attempts were cut short by infrastructure faults" in run.error
    assert "RUNNER_INFRASTRUCTURE_RETRIES=2" in run.error and "WorkerLost" in run.error
    assert list(run.attempts.order_by("attempt").values_list("status", flat=True)) == ["LOST"] * 3
    assert (step.attempts, step.attempt_offset, step.infrastructure_attempts) == (3, 3, 3)
    # The first loss is put back at once, the second after the infrastructure backoff (1 s +- 10 %).
    assert delays[0] == 0.0 and 0.9 <= delays[1] <= 1.1


@pytest.mark.django_db
def test_a_ready_step_whose_message_was_lost_is_requeued(tmp_path: Path, settings: object) -> None:
    wf = define(tmp_path, "lost", [{"key": "e", "agent": "t-echo"}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    DBTaskResult.objects.all().delete()  # the queue lost the message
    assert runner.requeue_stale_ready() == 0  # still within the grace period
    RunStep.objects.filter(run=run).update(ready_at=run.created_at.replace(year=2000))
    assert runner.requeue_stale_ready() == 1
    assert finish(run).status == RunStatus.SUCCESS


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_run_stops_its_running_step(tmp_path: Path, settings: Any) -> None:
    settings.RUNNER_LEASE_SECONDS = 1.5  # renewals (and so cancellation checks) every 0.5 s
    wf = define(
        tmp_path,
        "cancel",
        [
            {"key": "s", "agent": "t-sleep", "inputs": {"seconds": 30}},
            {"key": "t", "agent": "t-echo", "depends_on": ["s"]},
        ],
        AGENTS,
    )
    run, _ = trigger_workflow(wf, context={})

    def worker() -> None:
        try:
            work(lambda: WorkflowRun.objects.get(id=run.id).status == RunStatus.CANCELLED, timeout=15)
        finally:
            connections.close_all()

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 10
    while not RunStep.objects.filter(run=run, key="s", status=StepStatus.RUNNING).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    runner.cancel_run(run, reason="operator said stop", actor="olivia")
    thread.join(15)
    assert not thread.is_alive()
    assert run.status == RunStatus.CANCELLED and run.error == "operator said stop"
    deadline = time.monotonic() + 5
    while run.attempts.get().status == "RUNNING":
        assert time.monotonic() < deadline, "the running attempt was not closed after cancellation"
        time.sleep(0.05)
    assert time.monotonic() - started < 5
    assert run.attempts.get().status == AgentRun.Status.CANCELLED
    assert set(run.steps.values_list("status", flat=True)) == {StepStatus.CANCELLED}
    with pytest.raises(Exception, match="cannot move from CANCELLED to CANCELLED"):
        runner.cancel_run(run, reason="again", actor="olivia")


@pytest.mark.django_db
def test_retry_reruns_only_the_failed_steps(tmp_path: Path) -> None:
    wf = define(
        tmp_path,
        "retryrun",
        [
            {"key": "a", "agent": "t-echo"},
            {"key": "b", "agent": "t-flaky", "depends_on": ["a"], "inputs": {"fail_times": 1}},
            {"key": "c", "agent": "t-echo", "depends_on": ["b"]},
        ],
        AGENTS,
    )
    run = finish(trigger_workflow(wf, context={})[0])
    assert run.status == RunStatus.FAILED
    runner.retry_run(run, actor="olivia")
    assert run.status == RunStatus.RUNNING
    run = finish(run)
    assert run.status == RunStatus.SUCCESS
    assert attempts(run) == [("a", 1, "SUCCESS"), ("b", 1, "FAILED"), ("b", 2, "SUCCESS"), ("c", 1, "SUCCESS")]
    assert run.transitions.filter(to_status="RUNNING", reason="retry of failed steps", actor="olivia").exists()


@pytest.mark.django_db
def test_a_run_keeps_its_definition_when_the_workflow_changes(tmp_path: Path) -> None:
    wf = define(tmp_path, "snap", [{"key": "a", "agent": "t-echo", "inputs": {"v": 1}}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    wf = define(
        tmp_path, "snap", [{"key": "a", "agent": "t-echo", "inputs": {"v": 2}}, {"key": "z", "agent": "t-echo"}], AGENTS
    )
    assert wf.version == 2
    run = finish(run)
    assert run.workflow_version == 1 and run.steps.count() == 1
    assert run.steps.get().output == {"v": 1}


@pytest.mark.django_db
def test_a_ready_step_still_queued_behind_a_backlog_is_not_enqueued_again(tmp_path: Path) -> None:
    wf = define(tmp_path, "backlog", [{"key": "e", "agent": "t-echo"}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    RunStep.objects.filter(run=run).update(ready_at=run.created_at.replace(year=2000))
    assert runner.requeue_stale_ready() == 0  # its task is still waiting in the queue
    assert DBTaskResult.objects.count() == 1


@pytest.mark.django_db
def test_a_retry_delivered_just_before_its_time_is_put_back_even_if_the_time_comes_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    wf = define(tmp_path, "edge", [{"key": "e", "agent": "t-echo"}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    step = run.steps.get()
    due = timezone.now() + timedelta(milliseconds=40)
    RunStep.objects.filter(id=step.id).update(run_after=due)
    DBTaskResult.objects.all().delete()
    # The claim sees the step 10 ms early; every later look at the clock is past its time.
    clock = iter([due - timedelta(milliseconds=10)])
    monkeypatch.setattr(timezone, "now", lambda: next(clock, due + timedelta(milliseconds=5)))
    runner.run_step(step.id)
    step.refresh_from_db()
    assert step.status == StepStatus.READY and step.attempts == 0
    assert DBTaskResult.objects.count() == 1  # put back for its time, not left to the stale-READY sweep
    monkeypatch.undo()
    assert finish(run).status == RunStatus.SUCCESS


@pytest.mark.django_db
def test_a_ready_step_whose_task_was_orphaned_by_a_dead_worker_is_requeued(tmp_path: Path) -> None:
    from datetime import timedelta

    from django.tasks import TaskResultStatus

    wf = define(tmp_path, "orphan", [{"key": "e", "agent": "t-echo"}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    long_ago = run.created_at - timedelta(hours=1)
    RunStep.objects.filter(run=run).update(ready_at=long_ago)
    # A worker took the task, then died (or lost its connection) before claiming the step.
    task = DBTaskResult.objects.get()
    DBTaskResult.objects.filter(id=task.id).update(status=TaskResultStatus.RUNNING, started_at=run.created_at)
    assert runner.requeue_stale_ready() == 0  # taken just now: its worker is about to claim the step
    DBTaskResult.objects.filter(id=task.id).update(started_at=long_ago)
    assert runner.requeue_stale_ready() == 1
    assert DBTaskResult.objects.filter(status=TaskResultStatus.READY).count() == 1
    assert finish(run).status == RunStatus.SUCCESS


@pytest.mark.django_db
def test_a_retry_delivered_before_its_time_is_put_back_for_its_time(tmp_path: Path) -> None:
    from datetime import timedelta

    wf = define(tmp_path, "early", [{"key": "e", "agent": "t-echo"}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    step = run.steps.get()
    assert step.ready_at is not None
    due = step.ready_at + timedelta(seconds=30)
    RunStep.objects.filter(id=step.id).update(run_after=due)
    DBTaskResult.objects.all().delete()
    runner.run_step(step.id)  # delivered early, as a queue with a coarse scheduler may do
    step.refresh_from_db()
    assert step.status == StepStatus.READY and step.attempts == 0
    assert list(DBTaskResult.objects.values_list("run_after", flat=True)) == [due]


@pytest.mark.django_db(transaction=True)
def test_a_connection_killed_before_the_claim_costs_nothing(tmp_path: Path) -> None:
    from django.tasks import TaskResultStatus

    from workflows.management.commands.worker import Worker

    wf = define(tmp_path, "cutoff", [{"key": "e", "agent": "t-echo"}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    worker = Worker.draining("cut-off-worker")
    task = worker.next_task()
    assert task is not None
    terminate_backend(connection_pid())
    assert worker.execute(task) is True  # claimed, run and recorded on a fresh connection
    assert DBTaskResult.objects.get(id=task.id).status == TaskResultStatus.SUCCESSFUL
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS and list(run.attempts.values_list("status", flat=True)) == ["SUCCESS"]


@pytest.mark.django_db(transaction=True)
def test_a_task_cut_off_for_longer_than_a_lease_is_marked_failed_and_its_step_queued_again(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db.utils import OperationalError
    from django.tasks import TaskResultStatus

    from workflows.management.commands.worker import Worker

    settings.RUNNER_LEASE_SECONDS = 1.0

    def unreachable(*args: Any) -> bool:
        raise OperationalError("connection refused")

    wf = define(tmp_path, "cutoff-long", [{"key": "e", "agent": "t-echo"}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    worker = Worker.draining("cut-off-worker")
    task = worker.next_task()
    assert task is not None
    with monkeypatch.context() as patch:
        patch.setattr(attempt_module, "claim", unreachable)
        assert worker.execute(task) is False  # the claim never got through while a lease would have lasted
    assert run.steps.get().status == StepStatus.READY
    assert DBTaskResult.objects.get(id=task.id).status == TaskResultStatus.FAILED
    worker.recover_orphaned()
    # The step, which nobody claimed, is queued again at once, without waiting for its READY grace.
    assert DBTaskResult.objects.filter(status=TaskResultStatus.READY).count() == 1
    assert finish(run).status == RunStatus.SUCCESS


@pytest.mark.django_db(transaction=True)
def test_enqueueing_a_task_wakes_listening_workers_at_commit(tmp_path: Path) -> None:
    import psycopg
    from django.db import connection, transaction

    from workflows.wakeup import NOTIFY_CHANNEL

    wf = define(tmp_path, "wake", [{"key": "e", "agent": "t-echo"}], AGENTS)
    s = connection.settings_dict
    url = f"postgresql://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        with transaction.atomic():
            trigger_workflow(wf, context={})
            # Not before the task row is visible to the worker that wakes up.
            assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
        woken = list(listener.notifies(timeout=5, stop_after=1))
        assert [n.channel for n in woken] == [NOTIFY_CHANNEL]
        # Steps that change without enqueueing (a claim) wake nobody.
        RunStep.objects.update(ready_at=None)
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []


@pytest.mark.django_db
def test_a_chain_reads_its_agent_once_a_second_and_sees_changes_after_that(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    nodes = [{"key": f"s{i}", "agent": "t-echo", "depends_on": [f"s{i - 1}"] if i else []} for i in range(4)]
    wf = define(tmp_path, "lookup", nodes, AGENTS)
    run, _ = trigger_workflow(wf, context={})
    with CaptureQueriesContext(connection) as queries:
        run = finish(run)
    assert run.status == RunStatus.SUCCESS
    assert sum('FROM "agents_agent"' in q["sql"] for q in queries.captured_queries) == 1

    lookup = runner.AgentLookup()
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def enabled() -> bool:
        agent = lookup.get("t-echo")
        assert agent is not None
        return agent.enabled

    assert enabled()
    Agent.objects.filter(slug="t-echo").update(enabled=False)
    clock[0] += 0.5
    assert enabled()  # the row read half a second ago
    clock[0] += 0.6
    assert not enabled()  # a second old: read again
    assert lookup.get("no-such-agent") is None


# --- Database faults under a working worker: real backends terminated by the server -----------------------


def connection_pid() -> int:
    """The server process behind this thread's database connection."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def terminate_backend(pid: int) -> None:
    """Has PostgreSQL end one backend, as a restart or an operator's pg_terminate_backend would."""
    import psycopg
    from django.db import connection

    s = connection.settings_dict
    admin = f"postgresql://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/postgres"
    with psycopg.connect(admin, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def terminate_other_backends() -> int:
    """Ends every connection to the test database but this thread's own: the worker threads' among them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return len(cursor.fetchall())


def work_in_thread(run: WorkflowRun, timeout: float = 20) -> threading.Thread:
    def worker() -> None:
        try:
            work(lambda: WorkflowRun.objects.get(id=run.id).status in ("SUCCESS", "FAILED"), timeout=timeout)
        finally:
            connections.close_all()

    thread = threading.Thread(target=worker, name=f"worker-{run.id}")
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_a_lease_renewal_cut_off_by_a_killed_connection_keeps_the_attempt(tmp_path: Path, settings: Any) -> None:
    settings.RUNNER_LEASE_SECONDS = 1.5  # renewals every 0.5 s
    wf = define(tmp_path, "renew-cut", [{"key": "s", "agent": "t-sleep", "inputs": {"seconds": 2.5}}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    thread = work_in_thread(run)
    deadline = time.monotonic() + 10
    while not RunStep.objects.filter(run=run, status=StepStatus.RUNNING).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    killed = 0
    for _ in range(3):  # across several renewals: the worker thread's connection, again and again
        time.sleep(0.5)
        killed += terminate_other_backends()
    thread.join(30)
    assert not thread.is_alive() and killed >= 2
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS
    assert list(run.attempts.values_list("attempt", "status")) == [(1, "SUCCESS")]
    assert run.attempts.get().output == {"slept": 2.5}


@pytest.mark.django_db(transaction=True)
def test_a_finished_attempt_is_recorded_on_a_fresh_connection_when_the_first_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = attempt_module._record_outcome
    cut: list[int] = []

    def cut_off_once(*args: Any) -> Any:
        if not cut:
            cut.append(connection_pid())
            terminate_backend(cut[0])  # the server ends the connection just before the outcome is written
        return real(*args)

    monkeypatch.setattr(attempt_module, "_record_outcome", cut_off_once)
    wf = define(tmp_path, "record-cut", [{"key": "e", "agent": "t-echo", "inputs": {"x": 1}}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    run = finish(run)
    assert cut and run.status == RunStatus.SUCCESS
    assert list(run.attempts.values_list("attempt", "status")) == [(1, "SUCCESS")]
    assert run.steps.get().output == {"x": 1}


@pytest.mark.django_db(transaction=True)
def test_a_commit_whose_answer_was_lost_is_not_written_twice_and_the_chain_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db.utils import OperationalError

    real = attempt_module._record_outcome
    lost: list[str] = []

    def commit_then_lose_the_answer(run: WorkflowRun, step: RunStep, *args: Any) -> Any:
        result = real(run, step, *args)
        if step.key == "a" and not lost:
            lost.append(step.key)
            terminate_backend(connection_pid())
            raise OperationalError("server closed the connection unexpectedly")
        return result

    monkeypatch.setattr(attempt_module, "_record_outcome", commit_then_lose_the_answer)
    nodes: list[dict[str, Any]] = [
        {"key": "a", "agent": "t-echo"},
        {"key": "b", "agent": "t-echo", "depends_on": ["a"]},
        {"key": "c", "agent": "t-echo", "depends_on": ["b"]},
    ]
    run, _ = trigger_workflow(define(tmp_path, "commit-lost", nodes, AGENTS), context={})
    run = finish(run, timeout=10)  # far less than a lease: the inline claim of b was picked up, not reaped
    assert lost == ["a"] and run.status == RunStatus.SUCCESS
    assert attempts(run) == [("a", 1, "SUCCESS"), ("b", 1, "SUCCESS"), ("c", 1, "SUCCESS")]
    assert DBTaskResult.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_attempt_cut_off_by_a_lost_connection_is_handed_back_once_the_database_answers(tmp_path: Path) -> None:
    from django.tasks import TaskResultStatus

    from workflows.management.commands.worker import Worker

    wf = define(tmp_path, "prep-cut", [{"key": "e", "agent": "t-echo"}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    worker = Worker.draining(runner.worker_id())
    task = worker.next_task()
    assert task is not None
    step = run.steps.get()
    assert runner.claim(step.id, runner.worker_id())  # claimed under this worker's lease, then cut off
    terminate_backend(connection_pid())
    with pytest.raises(runner.CONNECTION_ERRORS):
        RunStep.objects.filter(id=step.id).update(error="")
    runner.drop_connection()
    worker.orphaned[task.id] = "OperationalError: server closed the connection unexpectedly"
    worker.recover_orphaned()
    step.refresh_from_db()
    assert step.status == StepStatus.READY and step.infrastructure_attempts == 1
    assert run.attempts.get().status == "LOST" and run.attempts.get().error_type == "ConnectionLost"
    assert DBTaskResult.objects.get(id=task.id).status == TaskResultStatus.FAILED
    assert finish(run).status == RunStatus.SUCCESS  # long before the 30 s lease would have run out


@pytest.mark.django_db
def test_the_reaper_closes_the_queue_row_its_dead_worker_left_running(tmp_path: Path) -> None:
    from django.tasks import TaskResultStatus

    from workflows.management.commands.worker import Worker

    wf = define(tmp_path, "rows", [{"key": "e", "agent": "t-echo"}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    other, _ = trigger_workflow(wf, context={})
    dead = Worker.draining("dead-worker:7")
    task = dead.next_task()
    assert task is not None and task.worker_ids == ["dead-worker:7"]
    alive = Worker.draining("live-worker:8").next_task()  # a live worker's task, running meanwhile
    assert alive is not None
    step = RunStep.objects.get(id=task.args_kwargs["args"][0])
    assert runner.claim(step.id, "dead-worker:7")
    RunStep.objects.filter(id=step.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert runner.reap_expired_leases() == 1
    row = DBTaskResult.objects.get(id=task.id)
    assert row.status == TaskResultStatus.FAILED and row.finished_at is not None
    assert row.exception_class_path == "workflows.runner.WorkerLost"
    assert "dead-worker:7 stopped renewing its lease" in row.traceback
    assert DBTaskResult.objects.get(id=alive.id).status == TaskResultStatus.RUNNING
    assert {run.id, other.id} >= {step.run_id}


@pytest.mark.django_db
def test_one_failing_maintenance_job_does_not_skip_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> int:
        raise RuntimeError("reaper bug")

    monkeypatch.setattr(maintenance_module, "reap_expired_leases", broken)
    wf = define(tmp_path, "maint", [{"key": "e", "agent": "t-echo"}], AGENTS)
    run, _ = trigger_workflow(wf, context={})
    DBTaskResult.objects.all().delete()  # the queue lost the message ...
    RunStep.objects.filter(run=run).update(ready_at=run.created_at.replace(year=2000))  # ... long ago
    done = runner.maintenance()
    assert "reaped" not in done and done["requeued"] == 1 and "expired_approvals" in done
    assert "pruned_task_results" in done
    assert "maintenance job reaped failed; the others go on" in caplog.text
