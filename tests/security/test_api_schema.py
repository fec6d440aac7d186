"""schemathesis against the API as it runs in production: gunicorn on PostgreSQL, DEBUG off, CSRF enforced.

Two runs, every check and phase schemathesis has: one with an API token, one with an admin session signed in
through the real sign-in form and sending its CSRF token. No 5xx, responses that match the schema, every status
the API answers declared in it, schema-valid data accepted and invalid data refused. Each run is bounded by
SCHEMATHESIS_MAX_EXAMPLES per operation and phase (and stopped after SCHEMATHESIS_MAX_TIME seconds); the number
of requests gunicorn served is printed (``-s`` shows it).
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command

from accounts.models import SCOPES, ApiToken
from config.api import api as ninja_api
from tests.conftest import DEFINITIONS
from tests.observability.procs import free_port, service_env, start_gunicorn
from workflows.models import Workflow
from workflows.services import trigger_workflow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ST = Path(sys.executable).with_name("st")
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "5"))
# A run stops after MAX_EXAMPLES per operation and phase; MAX_TIME only stops one that hangs. (schemathesis'
# own --max-time is a budget it spends in full, repeating its fuzzing until the time is up.)
MAX_TIME = int(os.environ.get("SCHEMATHESIS_MAX_TIME", "300"))
PASSWORD = "schema-pass-1"

PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "schemathesis-only-secret-key-schemathesis-only-secret-key",
    "ALLOWED_HOSTS": "127.0.0.1",
    "WEBHOOK_TOKEN": "schemathesis-webhook-token",
    # Plain HTTP on the loopback: the cookies cannot be Secure-only here.
    "SESSION_COOKIE_SECURE": "false",
    "CSRF_COOKIE_SECURE": "false",
    "OTEL_SDK_DISABLED": "true",
    "LOG_LEVEL": "warning",
    # schemathesis probes every operation with wrong tokens (its ignored_auth check) from one address, and
    # expects 401 each time; with the default limit its own probes would soon be answered 429. The limit
    # itself is tested in tests/security/test_tokens.py.
    "API_TOKEN_MAX_FAILURES": "100000",
}


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


def served(base: str) -> int:
    """Requests gunicorn has served so far, by django-prometheus's counter (added up over its workers)."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:  # noqa: S310 - a local test URL
        text = response.read().decode()
    found = re.search(r"^django_http_requests_before_middlewares_total (\S+)$", text, re.M)
    return int(float(found.group(1))) if found else 0


def sign_in(base: str, username: str) -> tuple[str, str]:
    """(sessionid, csrftoken) from the admin sign-in form, as a browser gets them."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with browser.open(f"{base}/admin/login/", timeout=30) as page:
        form_token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.read().decode())
    assert form_token, "the sign-in form has no CSRF token"
    data = urllib.parse.urlencode(
        {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": form_token.group(1)}
    ).encode()
    form = urllib.request.Request(f"{base}/admin/login/?next=/admin/", data=data)  # noqa: S310 - a local test URL
    with browser.open(form, timeout=30) as answer:
        assert answer.url.endswith("/admin/"), answer.url
    cookies = {cookie.name: str(cookie.value) for cookie in jar}
    return cookies["sessionid"], cookies["csrftoken"]


def schemathesis(base: str, tmp_path: Path, name: str, *headers: str, config: str = "") -> dict[str, Any]:
    """One run with ``headers`` on every request and ``config`` added to tests/security/schemathesis.toml."""
    assert ST.exists(), "schemathesis is not installed (pip install -e '.[dev]')"
    reports = tmp_path / name
    config_file = tmp_path / f"{name}.toml"
    config_file.write_text(f"{config}\n{CONFIG.read_text()}")
    before = served(base)
    result = subprocess.run(
        [
            str(ST),
            "--config-file",
            str(config_file),
            "run",
            f"{base}/api/openapi.json",
            *(arg for header in headers for arg in ("--header", header)),
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "20240901",
            "--request-timeout",
            "30",
            "--workers",
            "2",
            "--no-color",
            "--report",
            "vcr",
            "--report-dir",
            str(reports),
        ],
        capture_output=True,
        text=True,
        timeout=MAX_TIME,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )
    output = result.stdout + result.stderr
    (tmp_path / f"{name}.out").write_text(output)  # the whole report, for a failing run
    cassette = "\n".join(path.read_text() for path in reports.glob("*.yaml"))
    statuses = Counter(re.findall(r"^\s+code: '(\d{3})'$", cassette, re.M))
    tested = re.search(r"^\s*Tested: (\d+)", output, re.M)
    return {
        "code": result.returncode,
        "output": output,
        "tested": int(tested.group(1)) if tested else 0,
        "findings": findings(output),
        "cases": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "served": served(base) - before - 1,  # less the /metrics request that measured it
    }


@pytest.mark.timeout(2 * MAX_TIME + 600)
def test_schemathesis_finds_nothing_with_a_token_or_a_session(tmp_path: Path) -> None:
    call_command("sync_workflows", str(DEFINITIONS), verbosity=0)
    operator = User.objects.create_user("schema-op", password=PASSWORD, is_staff=True)
    operator.groups.add(Group.objects.get(name="operators"))
    token = ApiToken.issue(operator, name="schemathesis", scopes=SCOPES)[1]
    for slug in ("scan-and-notify", "scan-approve-notify"):
        trigger_workflow(Workflow.objects.get(slug=slug), context={"target": "db01"})

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = start_gunicorn(port, service_env(**PRODUCTION))
    try:
        session, csrf = sign_in(base, operator.username)
        runs = {
            "token": schemathesis(base, tmp_path, "token", f"Authorization: Bearer {token}"),
            # The session is the API's cookie security scheme, so schemathesis also tries requests without it
            # and with a wrong one; the CSRF cookie rides along in the same Cookie header.
            "session": schemathesis(
                base,
                tmp_path,
                "session",
                f"X-CSRFToken: {csrf}",
                config=f'[auth.openapi.StaffSessionAuth]\napi_key = "{session}; csrftoken={csrf}"\n',
            ),
        }
    finally:
        web.stop()
    for name, run in runs.items():
        print(
            f"schemathesis with a {name}: {run['cases']} test cases, {run['served']} requests served, {run['statuses']}"
        )
    operations = sum(len(methods) for methods in ninja_api.get_openapi_schema()["paths"].values())
    for name, run in runs.items():
        assert run["tested"] == operations, (name, run["output"][-4000:])
        assert not [status for status in run["statuses"] if status.startswith("5")], (name, run["statuses"])
        assert run["findings"] == set() and run["code"] == 0, (name, run["output"][-6000:])
    # The session run was authenticated by the session, with its CSRF token: it did change things.
    assert "202" in runs["session"]["statuses"], runs["session"]["statuses"]


def test_a_huge_limit_is_refused_with_a_4xx(operator: Any) -> None:
    from django.test import Client

    token = ApiToken.issue(operator, scopes=("read",))[1]
    client = Client(raise_request_exception=False, enforce_csrf_checks=True)
    response = client.get("/api/runs?limit=13090542320846534344704", headers={"Authorization": f"Bearer {token}"})
    assert 400 <= response.status_code < 500
