"""A live server of the service (gunicorn, optionally a worker) on the test database, for senders from outside:
the fuzz tests and a real Alertmanager. Module-scoped: one server per module, stopped even when a test fails."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.management import call_command

from tests.conftest import DEFINITIONS
from tests.observability.procs import Process, free_port, service_env, start_gunicorn, start_worker

WEBHOOK_TOKEN = "live-webhook-token"
GATED_WORKFLOW = "scan-approve-notify"


@dataclass
class LiveService:
    """gunicorn serving the webhook on ``port``, and a worker when the test needs runs to run."""

    port: int
    web: Process
    worker: Process | None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(
        self, body: bytes, headers: dict[str, str] | None = None, *, token: str = WEBHOOK_TOKEN
    ) -> tuple[int, Any]:
        """POSTs raw bytes to the webhook; (status, decoded JSON or the text)."""
        sent = {"Content-Type": "application/json", "Authorization": f"Bearer {token}", **(headers or {})}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("POST", "/webhooks/grafana", body=body, headers=sent)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode(errors="replace")

    def check_alive(self) -> None:
        self.web.check_alive()
        if self.worker is not None:
            self.worker.check_alive()

    def stop(self) -> None:
        for proc in (self.worker, self.web):
            if proc is not None and proc.proc.poll() is None:
                proc.stop()


# The module's tests read and write the database outside any test transaction, as the server does (a test
# transaction would hold its locks across requests): mark them django_db(transaction=True), which also
# empties every table after each test, and use ``synced_live`` to put the workflows back first.
LIVE_DB = pytest.mark.django_db(transaction=True)


def sync_definitions() -> None:
    call_command("sync_workflows", str(DEFINITIONS), verbosity=0)


@pytest.fixture(scope="module")
def committed_workflows(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """The bundled workflows committed before the live server starts; every table is flushed afterwards."""
    with django_db_blocker.unblock():
        sync_definitions()
        try:
            yield
        finally:
            call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def synced_live(transactional_db: None) -> None:
    """The bundled workflows again, for a test after the first (the flush after each test removed them)."""
    sync_definitions()


def start_live_service(*, worker: bool, **extra: str) -> LiveService:
    env = service_env(
        WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        ALERT_WORKFLOW_ALLOWLIST=GATED_WORKFLOW,
        OTEL_SDK_DISABLED="true",
        LOG_LEVEL="warning",
        **extra,
    )
    port = free_port()
    web = start_gunicorn(port, env)
    try:
        return LiveService(port, web, start_worker(env) if worker else None)
    except BaseException:
        web.stop()
        raise


@pytest.fixture(scope="module")
def live_service(committed_workflows: None) -> Iterator[LiveService]:
    """gunicorn without a worker: runs are started, not run."""
    service = start_live_service(worker=False)
    try:
        yield service
    finally:
        service.stop()
