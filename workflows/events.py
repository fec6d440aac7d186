"""The core's port: what happens to runs and steps, published for the apps plugged in above workflows.

workflows imports none of approvals, alerts or observability. It announces what happens through the events
below; those apps connect their listeners in ``AppConfig.ready()``. A listener is one of two kinds:

- a **guard** (``event.connect(fn)``) runs in line, inside the caller's transaction, in the order connected.
  It may veto by raising: the exception reaches the caller and the transaction rolls back. Approvals guard
  ``gate_opened`` (the gate's request is written with the step) and ``run_closing`` (open requests close
  with the run).
- an **observer** (``event.observe(fn)``) runs in line after the guards and never raises: an exception is
  logged and dropped, so a telemetry bug cannot fail a step or roll back a run. An observer that reports
  an outcome defers its report with ``transaction.on_commit`` (the workflow span of a finished run), so a
  rolled-back transition is never reported.

An event made with ``required=`` names the app that must guard it: without that guard a gated step would
wait for ever, so ``missing_listeners()`` names the gap, and the system check and every process's start
(web and worker) refuse to run with one.

Dispatch (workflows.port) is a loop over a tuple of callables, bound when the listener connects: the runner
publishes on its hot path (claim, finish), and an event nobody listens to costs one empty loop.

Besides events, the port has slots that an app fills: ``telemetry`` (a new run's trace context and the links
to its trace, for the console), ``gates`` (what the console shows of a run's approvals) and
``maintenance_jobs`` (periodic work the workers run for an app, such as expiring approvals).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from workflows import models
from workflows.port import Event, event, scope

if TYPE_CHECKING:
    from agents.models import AgentRun
    from workflows.models import RunStep, WorkflowRun


# --- The events ------------------------------------------------------------------------------------------


def _run_closing(run: WorkflowRun) -> None: ...
def _gate_opened(run: WorkflowRun, step: RunStep, node: dict[str, Any], now: datetime) -> None: ...
def _attempt(run: WorkflowRun, step: RunStep, attempt: AgentRun, node: dict[str, Any]) -> None: ...
def _retry(run: WorkflowRun, step: RunStep, node: dict[str, Any], *, reason: str, delay: float) -> None: ...
def _process(role: str) -> None: ...


# A run moved between statuses (WorkflowRun.transition, inside the run's transaction; its row is written).
# Declared beside WorkflowRun, which publishes it, so that the models need nothing from this module.
run_transitioned = models.run_transitioned
# The run is about to end (failed, rejected, cancelled) while steps may still be open; the run lock is held.
run_closing = event("run_closing", _run_closing, required="approvals")
# A step whose dependencies succeeded needs an approval: it is now WAITING_APPROVAL, in the run's transaction.
gate_opened = event("gate_opened", _gate_opened, required="approvals")
# An attempt's row is written and its executor is about to run (outside any transaction).
attempt_started = event("attempt_started", _attempt)
# Wraps the execution of one attempt (the executor's thread inherits what is current inside).
attempt_running = scope("attempt_running", _attempt)
# An attempt ended (success, failure, timeout, lost), inside the transaction that records it.
attempt_finished = event("attempt_finished", _attempt)
# A failed attempt will be tried again after ``delay`` seconds, inside the recording transaction.
retry_scheduled = event("retry_scheduled", _retry)
# Wraps a worker process's whole life (the worker command, ``role`` "worker").
worker_process = scope("worker_process", _process)

EVENTS: tuple[Event[Any], ...] = (
    run_transitioned,
    run_closing,
    gate_opened,
    attempt_started,
    attempt_finished,
    retry_scheduled,
)


def missing_listeners() -> list[str]:
    """The required guards that no app connected, as messages naming event and app."""
    return [
        f"event {event.name!r} has no guard: the {event.required!r} app must connect one in its AppConfig.ready()"
        for event in EVENTS
        if event.required and not event.guards
    ]


def require_listeners() -> None:
    """Refuses to start a process in which a required guard is missing."""
    from django.core.exceptions import ImproperlyConfigured

    missing = missing_listeners()
    if missing:
        raise ImproperlyConfigured("; ".join(missing))


# --- The slots -------------------------------------------------------------------------------------------


class Telemetry:
    """What the core asks of telemetry; this default, for a process without it, has no trace and no links."""

    def new_run_context(self) -> tuple[str, dict[str, str]]:
        """The trace id and W3C carrier for a run triggered now; ("", {}) without tracing."""
        return "", {}

    def run_trace_url(self, run: WorkflowRun) -> str | None:
        return None

    def attempt_span_url(self, run: WorkflowRun, attempt: AgentRun) -> str | None:
        return None

    def run_links(self, run: WorkflowRun) -> dict[str, str]:
        """The run's links by name (trace, logs, dashboard)."""
        return {}


telemetry = Telemetry()


class Gates:
    """What the console shows of runs' approval gates; this default, without approvals, has none."""

    def of_run(self, run: WorkflowRun) -> list[Any]:
        """The run's gate requests, oldest first, with their decisions and deciders loaded."""
        return []

    def waiting(self, run_ids: list[Any]) -> dict[Any, int]:
        """How many requests wait for a decision, by run id (runs with none left out)."""
        return {}


gates = Gates()


def provide_gates(provider: Gates) -> None:
    global gates
    gates = provider


def provide_telemetry(provider: Telemetry) -> None:
    global telemetry
    telemetry = provider


@dataclass(frozen=True)
class MaintenanceJob:
    """Periodic work of an app, run by every worker's maintenance pass; returns a count or counts by name."""

    name: str
    run: Callable[[], int | dict[str, int]]


maintenance_jobs: list[MaintenanceJob] = []


def add_maintenance_job(name: str, run: Callable[[], int | dict[str, int]]) -> None:
    if all(job.name != name for job in maintenance_jobs):
        maintenance_jobs.append(MaintenanceJob(name, run))
