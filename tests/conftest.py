"""Shared fixtures: named users, API clients and a way to let the runner work in-process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.test import Client

from accounts.models import ApiToken
from tests.browser import browser  # noqa: F401 - the Chromium fixture of the browser tests
from tests.children import kill_leftovers
from workflows.models import TERMINAL_RUN_STATUSES, WorkflowRun

DEFINITIONS = Path(settings.BASE_DIR) / "workflows" / "definitions"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Servers and workers that an interrupted earlier run left holding the test database are killed first,
    so that this run can drop and recreate it (tests/children.py: this run's own children die with it)."""
    db = settings.DATABASES["default"]
    if "postgresql" not in db["ENGINE"]:
        return
    name = db.get("TEST", {}).get("NAME") or f"test_{db['NAME']}"
    killed = kill_leftovers(name, db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432))
    if killed:
        print(f"killed {len(killed)} process(es) left on {name} by an earlier run: {killed}")


@pytest.fixture
def synced(db: None) -> None:
    """The bundled agent and workflow definitions, as `make run` loads them."""
    call_command("sync_workflows", str(DEFINITIONS), verbosity=0)


@pytest.fixture
def operator(db: None) -> User:
    user = User.objects.create_user("olivia", password="operator-pass-1", is_staff=True)
    group, _ = Group.objects.get_or_create(name="operators")
    group.permissions.add(*Permission.objects.filter(codename__in=["decide_approval", "view_workflowrun"]))
    user.groups.add(group)
    return user


@pytest.fixture
def viewer(db: None) -> User:
    user = User.objects.create_user("victor", password="viewer-pass-1", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_workflowrun", "view_approvalrequest"]))
    return user


@pytest.fixture
def outsider(db: None) -> User:
    return User.objects.create_user("oscar", password="outsider-pass-1")


class ApiClient:
    """A test client for the API that meets CSRF checks as real clients do: it sends a bearer token, or it is
    signed in to the admin and sends the session's CSRF token (``session``), with JSON bodies."""

    def __init__(self, token: str | None) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    @classmethod
    def session(cls, user: User, *, csrf: bool = True) -> ApiClient:
        """Signed in as ``user``; with ``csrf`` it sends the X-CSRFToken header as the console's pages would."""
        client = cls(None)
        client.client.get("/admin/login/")  # the sign-in page sets the csrftoken cookie, as for a browser
        client.client.force_login(user)
        if csrf:
            client.headers["X-CSRFToken"] = client.client.cookies["csrftoken"].value
        return client

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)

    def post(self, path: str, data: Any = None, *, raw: bytes | str | None = None, **kwargs: Any) -> Any:
        body = raw if raw is not None else (None if data is None else json.dumps(data))
        return self.client.generic(
            "POST",
            path,
            data=body or b"",
            content_type=kwargs.pop("content_type", "application/json"),
            headers={**self.headers, **kwargs.pop("headers", {})},
            **kwargs,
        )


@pytest.fixture
def api(operator: User) -> ApiClient:
    _, value = ApiToken.issue(operator, name="tests", scopes=("trigger", "read", "approve"))
    return ApiClient(value)


@pytest.fixture
def anonymous_api() -> ApiClient:
    return ApiClient(None)


def work(until: Callable[[], bool] | None = None, timeout: float = 20.0) -> None:
    """Runs queued tasks in this process, like a worker, until ``until()`` holds or nothing is left."""
    from workflows.management.commands.worker import Worker

    deadline = time.monotonic() + timeout
    worker = Worker.draining("test-worker", interval=0.05)
    while time.monotonic() < deadline:
        task = worker.next_task()
        if task is not None:
            worker.run_task(task)
            continue
        if until is None or until():
            return
        time.sleep(0.02)
    raise AssertionError("the runner did not reach the expected state in time")


def finish(run: WorkflowRun, timeout: float = 20.0) -> WorkflowRun:
    """Works until the run is terminal and returns it fresh from the database."""

    def done() -> bool:
        run.refresh_from_db()
        return run.status in TERMINAL_RUN_STATUSES

    work(done, timeout)
    return run
