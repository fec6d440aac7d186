"""API tokens from `manage.py create_api_token` and their revocation in the admin."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from accounts.models import SCOPES, ApiToken
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r"^cc_(?P<prefix>[0-9a-f]{8})_(?P<secret>[A-Za-z0-9_-]{40,})$")


def create_api_token(*args: str, stderr: StringIO | None = None) -> str:
    out = StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=stderr or StringIO())
    return out.getvalue()


def stored_cells() -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")  # noqa: S608 - a table name of ours
        return " ".join(str(cell) for row in cursor.fetchall() for cell in row)


def test_create_api_token_prints_a_read_only_token_by_default_and_says_so(synced: None, operator: User) -> None:
    said = StringIO()
    output = create_api_token("olivia", "--name", "deploy bot", stderr=said)
    lines = output.splitlines()
    assert len(lines) == 1, output  # the token and nothing else, so scripts can capture it
    value = lines[0]
    match = TOKEN.match(value)
    assert match, value
    token = ApiToken.objects.get()
    assert (token.user, token.name, token.prefix) == (operator, "deploy bot", match["prefix"])
    assert token.scopes == ["read"]
    assert said.getvalue().splitlines() == [
        f"Token {token.prefix}… for olivia with scope(s): read.",
        "  read: may view workflows; view runs; view approval requests",
    ]

    client = ApiClient(value)
    assert client.get("/api/workflows").status_code == 200
    response = client.post("/api/workflows/scan-and-notify/trigger", {"context": {"target": "db01"}})
    assert response.status_code == 403 and "'trigger' scope" in response.json()["detail"]
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_more_scopes_are_asked_for_and_a_scope_the_user_cannot_use_is_named(synced: None, viewer: User) -> None:
    said = StringIO()
    value = create_api_token("victor", "--scopes", "trigger,read", stderr=said).strip()
    assert ApiToken.objects.get().scopes == ["trigger", "read"]
    assert "  trigger: grants nothing: victor holds none of the permissions it covers" in said.getvalue()
    response = ApiClient(value).post("/api/workflows/scan-and-notify/trigger", {"context": {}})
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "victor lacks the permission to trigger workflows (workflows.change_workflowrun)"
    )


def test_the_printed_token_is_stored_only_as_a_hash_and_shown_only_once(operator: User) -> None:
    value = create_api_token("olivia").strip()
    secret = TOKEN.match(value)["secret"]  # type: ignore[index]
    token = ApiToken.objects.get()
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in stored_cells() and value not in stored_cells()
    # Running it again issues another token; the first cannot be printed again.
    again = create_api_token("olivia").strip()
    assert again != value and ApiToken.objects.count() == 2
    admin = User.objects.create_superuser("root", password="root-pass-1")
    client = Client()
    client.force_login(admin)
    page = client.get(reverse("admin:accounts_apitoken_change", args=[token.pk])).content.decode()
    assert token.prefix in page and secret not in page


def test_scopes_limit_what_the_token_may_do(synced: None, operator: User) -> None:
    value = create_api_token("olivia", "--scopes", "read").strip()
    client = ApiClient(value)
    assert client.get("/api/runs").status_code == 200
    response = client.post("/api/workflows/scan-and-notify/trigger", {"context": {}})
    assert response.status_code == 403 and "'trigger' scope" in response.json()["detail"]
    with pytest.raises(CommandError, match=r"unknown scope\(s\): admin"):
        create_api_token("olivia", "--scopes", "read,admin")
    assert ApiToken.objects.count() == 1


@pytest.mark.django_db(transaction=True)  # the command runs in its own process, against the committed state
def test_an_unknown_user_is_a_clear_error_and_a_non_zero_exit() -> None:
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        create_api_token("nobody")
    db = connection.settings_dict
    result = subprocess.run(
        [sys.executable, "manage.py", "create_api_token", "nobody"],
        cwd=settings.BASE_DIR,
        env={
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
            f"/{db['NAME']}",
            "DEBUG": "1",
            "OTEL_SDK_DISABLED": "true",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "CommandError: no user named 'nobody'" in result.stderr
    assert result.stdout == ""
    assert not ApiToken.objects.exists()


def test_the_admin_revoke_action_turns_the_token_away(synced: None, operator: User) -> None:
    revoked, revoked_value = ApiToken.issue(operator, name="leaked", scopes=SCOPES)
    _, kept_value = ApiToken.issue(operator, name="kept", scopes=SCOPES)
    assert ApiClient(revoked_value).get("/api/runs").status_code == 200

    admin = User.objects.create_superuser("root", password="root-pass-1")
    client = Client()
    client.force_login(admin)
    response = client.post(
        reverse("admin:accounts_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [revoked.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Revoked 1 token(s)." in response.content.decode()
    revoked.refresh_from_db()
    assert revoked.revoked_at is not None

    answer = ApiClient(revoked_value).get("/api/runs")
    assert answer.status_code == 401 and "Bearer" in answer.json()["detail"]
    assert ApiClient(kept_value).get("/api/runs").status_code == 200

    # Revoking again keeps the first revocation time.
    first = revoked.revoked_at
    again = client.post(
        reverse("admin:accounts_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [revoked.pk]},
        follow=True,
    )
    assert "Revoked 0 token(s)." in again.content.decode()
    revoked.refresh_from_db()
    assert revoked.revoked_at == first
