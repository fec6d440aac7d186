"""Fixtures for the over-the-wire tests: an OTLP receiver and data committed for child processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command

from accounts.models import ApiToken
from tests.conftest import DEFINITIONS
from tests.observability.procs import Process, free_port, http, service_env, start_runserver, start_worker
from tests.observability.receiver import Receiver

WORKFLOWS = Path(__file__).parent / "workflows"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@dataclass
class Tokens:
    trigger: str  # trigger + read, for the user who starts runs
    approver: str  # approve + read, for the user who decides


@pytest.fixture(scope="module")
def committed(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Tokens]:
    """Workflows, users and tokens committed to the test database, so the service's processes see them.

    Everything is flushed afterwards, as a transactional test would.
    """
    with django_db_blocker.unblock():
        call_command("sync_workflows", str(DEFINITIONS), verbosity=0)
        call_command("sync_workflows", str(WORKFLOWS), verbosity=0)
        starter = User.objects.create_user("obs-starter", password="starter-pass-1", is_staff=True)
        starter.user_permissions.add(
            *Permission.objects.filter(codename__in=["change_workflowrun", "view_workflowrun", "view_workflow"])
        )
        approver = User.objects.create_user("obs-approver", password="approver-pass-1", is_staff=True)
        approver.user_permissions.add(*Permission.objects.filter(codename__in=["decide_approval", "view_workflowrun"]))
        _, trigger = ApiToken.issue(starter, name="obs", scopes=("trigger", "read"))
        _, approve = ApiToken.issue(approver, name="obs", scopes=("approve", "read"))
    yield Tokens(trigger=trigger, approver=approve)
    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)


WEBHOOK_TOKEN = "obs-webhook-token"


@dataclass
class Service:
    """runserver and a worker, both exporting every signal over OTLP/HTTP to the module's receiver."""

    base: str
    web: Process
    worker: Process
    receiver: Receiver

    def stop(self) -> None:
        """SIGTERM both processes; each flushes what it has buffered before it exits."""
        for proc in (self.worker, self.web):
            if proc.proc.poll() is None:
                proc.stop()

    def run(self, token: str, slug: str, context: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
        """Triggers a run over the API and returns it (as the API shows it) once it is terminal."""
        status, run, _ = http(
            "POST",
            f"{self.base}/api/workflows/{slug}/trigger",
            token=token,
            body={"context": context or {}},
            headers=headers,
        )
        assert status == 202, run

        def terminal() -> dict[str, Any] | None:
            status, current, _ = http("GET", f"{self.base}/api/runs/{run['id']}", token=token)
            assert status == 200, current
            return current if current["status"] in TERMINAL else None

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.web.check_alive()
            self.worker.check_alive()
            done = terminal()
            if done is not None:
                return done
            time.sleep(0.1)
        raise AssertionError(f"run {run['id']} of {slug} did not finish:\n{self.worker.output()[-3000:]}")


TERMINAL = {"SUCCESS", "FAILED", "CANCELLED", "REJECTED"}


@contextmanager
def running_service(receiver: Receiver, **extra: str) -> Iterator[Service]:
    """runserver and a worker exporting to ``receiver``, with ``extra`` added to their environment."""
    env = service_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint,
        OTEL_METRIC_EXPORT_INTERVAL="300",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_BLRP_SCHEDULE_DELAY="100",
        WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        **extra,
    )
    port = free_port()
    web = start_runserver(port, env)
    worker = start_worker(env)
    running = Service(f"http://127.0.0.1:{port}", web, worker, receiver)
    try:
        yield running
    finally:
        failed = [proc for proc in (worker, web) if proc.proc.poll() not in (None, 0)]
        running.stop()
        for proc in failed:
            print(proc.name, proc.output()[-4000:])


@pytest.fixture(scope="module")
def service(receiver: Receiver, committed: Tokens) -> Iterator[Service]:
    # Every span recorded (the default sampler keeps queries and HTTP calls for a tenth of the traces), so the
    # tests can look at any span of any run.
    with running_service(receiver, OTEL_TRACES_SAMPLER_ARG="1") as running:
        yield running
