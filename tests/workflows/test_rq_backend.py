"""TASK_BACKEND=rq: the same runner on RQ (Redis), chosen by settings alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests.children import popen
from tests.workflows.test_worker_processes import database_url
from workflows.models import TERMINAL_RUN_STATUSES, RunStatus, WorkflowRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
TRIGGER = """
from workflows.models import Workflow
from workflows.services import trigger_workflow
for slug in ("scan-and-notify", "test-failure"):
    print(trigger_workflow(Workflow.objects.get(slug=slug), context={"target": "db01"})[0].id)
"""


def test_runs_succeed_and_retries_are_deferred_on_rq(synced: None, tmp_path: Path) -> None:
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DEBUG": "1",
        "OTEL_SDK_DISABLED": "true",
        "TASK_BACKEND": "rq",
        "REDIS_URL": REDIS_URL,
    }
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    worker = popen(
        [sys.executable, "manage.py", "worker"], cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        out = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", TRIGGER],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.splitlines()
        ids = [line.strip() for line in out if len(line.strip()) == 36]
        assert len(ids) == 2
        deadline = time.monotonic() + 60
        while WorkflowRun.objects.filter(id__in=ids, status__in=TERMINAL_RUN_STATUSES).count() < 2:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(20)
        log.close()
    ok, failing = WorkflowRun.objects.get(id=ids[0]), WorkflowRun.objects.get(id=ids[1])
    assert ok.status == RunStatus.SUCCESS and ok.attempts.filter(status="SUCCESS").count() == 5
    # test-failure: three attempts of the failing step, each after its backoff, then FAILED
    assert failing.status == RunStatus.FAILED
    assert list(failing.attempts.filter(step__key="doomed").values_list("attempt", "status")) == [
        (1, "FAILED"),
        (2, "FAILED"),
        (3, "FAILED"),
    ]
