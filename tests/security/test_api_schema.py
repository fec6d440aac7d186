"""schemathesis against the live OpenAPI schema (/api/openapi.json) with a valid token.

No 5xx, responses that match the schema, and every status code the API answers declared in it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from accounts.models import ApiToken
from tests.conftest import DEFINITIONS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ST = Path(sys.executable).with_name("st")
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "6"))

# (operation, check id) -> why it is accepted. Empty: every finding fails the tests.
KNOWN: dict[tuple[str, str], str] = {}


def findings(output: str) -> set[tuple[str, str]]:
    """(operation, check id) for every failure in schemathesis' report."""
    found = set()
    operation = ""
    for line in output.splitlines():
        header = re.match(r"^_{3,} ((?:GET|POST|PUT|PATCH|DELETE) \S+) _{3,}$", line)
        if header:
            operation = header.group(1)
            continue
        check = re.match(r"^- (ST\d{3}) ", line)
        if check and operation:
            found.add((operation, check.group(1)))
    return found


@pytest.fixture
def token(operator: Any) -> str:
    call_command("sync_workflows", str(DEFINITIONS), verbosity=0)
    from workflows.models import Workflow
    from workflows.services import trigger_workflow

    trigger_workflow(Workflow.objects.get(slug="scan-and-notify"), context={"target": "db01"})
    return ApiToken.issue(operator, name="schemathesis")[1]


def schemathesis(live_server: Any, token: str, tmp_path: Path, checks: str, *extra: str) -> tuple[int, str]:
    assert ST.exists(), "schemathesis is not installed (pip install -e '.[dev]')"
    result = subprocess.run(
        [
            str(ST),
            "run",
            f"{live_server.url}/api/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            checks,
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "20240901",
            "--request-timeout",
            "30",
            "--workers",
            "1",
            "--no-color",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.timeout(600)
def test_no_server_errors_and_responses_match_the_schema(live_server: Any, token: str, tmp_path: Path) -> None:
    code, output = schemathesis(
        live_server, token, tmp_path, "not_a_server_error,response_schema_conformance,content_type_conformance"
    )
    print(output)
    found = findings(output)
    assert code == 0 or found, output[-6000:]
    assert found - set(KNOWN) == set(), output[-6000:]


@pytest.mark.timeout(600)
def test_status_codes_are_declared(live_server: Any, token: str, tmp_path: Path) -> None:
    code, output = schemathesis(live_server, token, tmp_path, "status_code_conformance")
    print(output)
    found = findings(output)
    assert code == 0 or found, output[-6000:]
    assert found - set(KNOWN) == set(), output[-6000:]


def test_a_huge_limit_is_refused_with_a_4xx(token: str) -> None:
    from django.test import Client

    client = Client(raise_request_exception=False)
    response = client.get("/api/runs?limit=13090542320846534344704", headers={"Authorization": f"Bearer {token}"})
    assert 400 <= response.status_code < 500
