"""The background worker: executes queued steps and runs the maintenance loop (reaper, approval expiry).

Many of these run at once, on one machine or many; they coordinate only through the database. On
PostgreSQL an idle worker sleeps in LISTEN and is woken by the NOTIFY sent with each enqueued task, so a
step starts within milliseconds of being queued; the poll interval only bounds how late a deferred
(retry) task may start. SIGTERM or SIGINT stops taking work; a running step gets
WORKER_SHUTDOWN_GRACE_SECONDS to finish and is then released for another worker. A second signal exits
at once (the step's lease then expires and the reaper recovers it).

A database that goes away (restart, outage, killed connection) does not stop a worker: the task loop, the
maintenance thread and the LISTEN connection each reconnect by themselves, and a task cut off by a lost
connection is cleaned up once the database answers again (``Worker.recover_orphaned``).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections, connection
from django.db.utils import DatabaseError, OperationalError
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, TaskResultStatus, task_backends
from django.utils import timezone
from django_tasks_db.backend import DatabaseBackend
from django_tasks_db.management.commands.db_worker import Worker as DbWorker
from django_tasks_db.models import DBTaskResult
from django_tasks_db.utils import exclusive_transaction

from workflows import events, heartbeat, runner
from workflows.models import RunStep, StepStatus
from workflows.wakeup import NOTIFY_CHANNEL

logger = logging.getLogger("workflows.worker")

CONNECTION_ERROR_PATHS = frozenset(f"{error.__module__}.{error.__qualname__}" for error in runner.CONNECTION_ERRORS)


class Wakeup:
    """Blocks until a task is announced (PostgreSQL LISTEN) or the timeout passes."""

    def __init__(self) -> None:
        self.conn: psycopg.Connection[Any] | None = None

    def _connect(self) -> None:
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        self.conn = psycopg.connect(**params, autocommit=True)
        self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def wait(self, timeout: float) -> None:
        if connection.vendor != "postgresql":
            time.sleep(min(timeout, 0.1))
            return
        try:
            if self.conn is None or self.conn.closed:
                self._connect()
            assert self.conn is not None
            for _ in self.conn.notifies(timeout=timeout, stop_after=1):
                pass
            # Drain notifications that piled up, so one burst does not cause many empty polls.
            for _ in self.conn.notifies(timeout=0):
                pass
        except psycopg.Error as exc:
            logger.warning("task wake-up connection failed (%s); polling until it is back", exc)
            self.close()
            time.sleep(min(timeout, 1.0))

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None


class Worker(DbWorker):
    """django_tasks_db's worker, with LISTEN/NOTIFY wake-ups, the maintenance thread and DB-outage tolerance."""

    @classmethod
    def draining(cls, worker_id: str, interval: float = 0.05) -> Worker:
        """A worker that a test or a measurement drives by hand: next_task() / run_task(), no signals."""
        return cls(
            queue_names=["default"],
            interval=interval,
            batch=True,
            backend_name="default",
            startup_delay=False,
            max_tasks=None,
            worker_id=worker_id,
            excluded_queue_names=[],
        )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wakeup = Wakeup()
        self.stop = threading.Event()
        # Tasks whose outcome could not be recorded because the connection died under them.
        self.orphaned: dict[Any, str] = {}

    def shutdown(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            logger.warning("second %s: exiting now", signal.strsignal(signum))
            sys.exit(1)
        logger.info("%s: finishing the current step, then stopping", signal.strsignal(signum))
        self.stop.set()
        self.running = False
        runner.request_shutdown()

    def maintenance_loop(self) -> None:
        heartbeat.beat()
        while not self.stop.wait(settings.RUNNER_REAPER_INTERVAL):
            heartbeat.beat()
            try:
                close_old_connections()
                done = runner.maintenance()
                if any(done.values()):
                    logger.info("maintenance %s", done, extra={"event": "maintenance", **done})
            except Exception as exc:
                logger.exception("maintenance pass failed; trying again in %ss", settings.RUNNER_REAPER_INTERVAL)
                if isinstance(exc, runner.CONNECTION_ERRORS):
                    runner.drop_connection()

    def next_task(self) -> DBTaskResult | None:
        tasks = DBTaskResult.objects.ready().filter(backend_name=self.backend_name)
        if not self.process_all_queues:
            tasks = tasks.filter(queue_name__in=self.queue_names)
        with exclusive_transaction(tasks.db):
            task_result = tasks.get_locked()
            if task_result is not None:
                task_result.claim(self.worker_id)
        return task_result

    def execute(self, task_result: DBTaskResult) -> bool:
        """Runs one task; False when the database connection died under it."""
        try:
            self.run_task(task_result)
        except runner.CONNECTION_ERRORS as exc:
            # The connection died under the task (server restart, pg_terminate_backend) and django_tasks_db
            # could not record the outcome either. Our tables stay the truth; once the database answers again,
            # recover_orphaned() marks the task row and puts back what the task left behind.
            logger.warning("database connection lost while running a task (%s); reconnecting", exc)
            self.orphaned[task_result.id] = f"{type(exc).__name__}: {exc}"
            connection.close()
            return False
        failed_on = task_result.exception_class_path if task_result.status == TaskResultStatus.FAILED else ""
        if failed_on in CONNECTION_ERROR_PATHS:
            # The task gave up on an unreachable database, but its failure could be recorded: what it left
            # behind is put back as for a task cut off.
            self.orphaned[task_result.id] = failed_on
            return False
        return True

    def recover_orphaned(self) -> None:
        """Cleans up after the tasks cut off by a lost connection, once the database answers again.

        Their queue rows are marked failed, so the queue does not show them running forever. What they left
        behind goes back at once instead of waiting for a timer: a step this worker still holds (its attempt
        was cut off) is closed as LOST and put back (runner.release_abandoned), and a step the task never got
        to claim, still READY, is queued again.
        """
        now = timezone.now()
        runner.release_abandoned(runner.worker_id())
        for task_id, error in list(self.orphaned.items()):
            args = DBTaskResult.objects.filter(id=task_id).values_list("args_kwargs", flat=True).first()
            DBTaskResult.objects.filter(id=task_id, status=TaskResultStatus.RUNNING).update(
                status=TaskResultStatus.FAILED,
                finished_at=now,
                exception_class_path=f"{OperationalError.__module__}.{OperationalError.__qualname__}",
                traceback=f"the worker lost its database connection while running this task: {error}",
            )
            step_id = (args or {}).get("args", [None])[0]
            if step_id is not None and RunStep.objects.filter(id=step_id, status=StepStatus.READY).exists():
                runner.enqueue_step(step_id)
            del self.orphaned[task_id]

    def run(self) -> None:
        logger.info("worker %s started (queues %s)", self.worker_id, ",".join(self.queue_names))
        thread = threading.Thread(target=self.maintenance_loop, name="maintenance", daemon=True)
        thread.start()
        try:
            while self.running:
                try:
                    close_old_connections()
                    if self.orphaned:
                        self.recover_orphaned()
                    task_result = self.next_task()
                except runner.CONNECTION_ERRORS as exc:
                    logger.warning("database unavailable (%s); retrying in 1s", exc)
                    connection.close()
                    time.sleep(1.0)
                    continue
                if task_result is not None:
                    if not self.execute(task_result):
                        time.sleep(1.0)
                        continue
                    if self.max_tasks is not None and self._run_tasks >= self.max_tasks:
                        break
                elif self.batch:
                    break
                elif self.running:
                    self.wakeup.wait(self.interval)
        finally:
            self.stop.set()
            self.wakeup.close()
            logger.info("worker %s stopped", self.worker_id)


class Command(BaseCommand):
    help = "Run a background worker: queued steps plus maintenance (lease reaper, approval expiry)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue-name", default="default", help="Comma-separated queues, or '*'.")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="Poll interval in seconds (default: WORKER_POLL_INTERVAL).",
        )
        parser.add_argument("--batch", action="store_true", help="Exit when the queue is empty.")
        parser.add_argument("--max-tasks", type=int, default=None)
        parser.add_argument("--worker-id", default=None, help="Unique id (default: host:pid).")

    def handle(self, *args: Any, **options: Any) -> None:
        events.require_listeners()
        with events.worker_process("worker"):
            self._work(options)

    def _work(self, options: dict[str, Any]) -> None:
        if options["worker_id"]:
            # One name in leases, attempt rows and queue rows, so the reaper can close a dead worker's queue rows.
            runner.set_worker_id(options["worker_id"][:64])
        backend = task_backends[DEFAULT_TASK_BACKEND_ALIAS]
        if not isinstance(backend, DatabaseBackend):
            self._run_rq(options["queue_name"].split(","))
            return
        worker = Worker(
            queue_names=options["queue_name"].split(","),
            interval=options["interval"] if options["interval"] is not None else settings.WORKER_POLL_INTERVAL,
            batch=options["batch"],
            backend_name=DEFAULT_TASK_BACKEND_ALIAS,
            startup_delay=False,
            max_tasks=options["max_tasks"],
            worker_id=runner.worker_id(),
            excluded_queue_names=[],
        )
        worker.configure_signals()
        try:
            worker.run()
        except DatabaseError:
            logger.exception("worker stopped by a database error")
            raise

    def _run_rq(self, queues: list[str]) -> None:
        """TASK_BACKEND=rq: an RQ worker (with its scheduler, for deferred retries) plus maintenance."""
        import django_rq
        from django_tasks_rq.backend import Job

        stop = threading.Event()

        def maintenance() -> None:
            heartbeat.beat()
            while not stop.wait(settings.RUNNER_REAPER_INTERVAL):
                heartbeat.beat()
                try:
                    close_old_connections()
                    runner.maintenance()
                except Exception:
                    logger.exception("maintenance pass failed")

        threading.Thread(target=maintenance, name="maintenance", daemon=True).start()
        try:
            django_rq.get_worker(*queues, job_class=Job).work(with_scheduler=True)
        finally:
            stop.set()
