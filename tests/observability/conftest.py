"""Fixtures for the over-the-wire tests: an OTLP receiver and data committed for child processes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command

from accounts.models import ApiToken
from tests.conftest import DEFINITIONS
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
        approver = User.objects.create_user("obs-approver", password="approver-pass-1", is_staff=True)
        approver.user_permissions.add(Permission.objects.get(codename="decide_approval"))
        _, trigger = ApiToken.issue(starter, name="obs", scopes=("trigger", "read"))
        _, approve = ApiToken.issue(approver, name="obs", scopes=("approve", "read"))
    yield Tokens(trigger=trigger, approver=approve)
    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)
