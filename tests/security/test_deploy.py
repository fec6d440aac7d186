"""`manage.py check --deploy` is clean with production settings, and refuses to pass without them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from config.checks import check_outgoing_guard

ROOT = Path(settings.BASE_DIR)

PRODUCTION = {
    "PATH": "/usr/bin:/bin",
    "SECRET_KEY": "k7Qz-production-like-secret-key-with-plenty-of-entropy-9fJ2xLm4Pq8Rw1Ty6Uv3",
    "ALLOWED_HOSTS": "cc.example.com",
    "BEHIND_TLS_PROXY": "true",
    "SITE_URL": "https://cc.example.com",
    "DATABASE_URL": "postgres://cc@db.internal:5432/commandcenter",
    "WEBHOOK_TOKEN": "a-webhook-token-for-the-check",
    "OTEL_SDK_DISABLED": "true",
}


def check(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={k: v for k, v in {**PRODUCTION, **env}.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings() -> None:
    result = check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr


def test_production_settings_are_the_hardened_ones() -> None:
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup();"
        "from django.conf import settings as s;"
        "print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
        " s.SECURE_HSTS_SECONDS >= 31536000, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.X_FRAME_OPTIONS,"
        " s.SESSION_COOKIE_HTTPONLY)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=PRODUCTION, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == ["False", "True", "True", "True", "True", "True", "DENY", "True"], result.stderr


WEAKENED = {
    "SECURE_HSTS_SECONDS": ("0", "security.W004"),
    "SESSION_COOKIE_SECURE": ("false", "security.W012"),
    "CSRF_COOKIE_SECURE": ("false", "security.W016"),
    "BEHIND_TLS_PROXY": ("false", "security.W008"),
    "HTTP_ALLOW_PRIVATE_ADDRESSES": ("true", "commandcenter.W001"),
    "COMMAND_AGENT_ALLOWLIST": ("/usr/local/bin/scan,bash", "commandcenter.W002"),
    "SITE_URL": ("http://cc.example.com", "commandcenter.W004"),
}


def test_check_deploy_flags_each_weakened_setting() -> None:
    result = check(**{name: value for name, (value, _) in WEAKENED.items()})
    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert [check_id for _, check_id in WEAKENED.values() if check_id not in output] == []


def test_the_private_address_warning_points_to_the_narrower_allowlist(settings) -> None:
    settings.HTTP_ALLOW_PRIVATE_ADDRESSES = True
    [warning] = check_outgoing_guard()
    assert warning.id == "commandcenter.W001"
    assert warning.hint is not None
    assert "HTTP_ALLOWED_PRIVATE_NETWORKS" in warning.hint
    settings.HTTP_ALLOW_PRIVATE_ADDRESSES = False
    assert check_outgoing_guard() == []


@pytest.mark.parametrize(("hosts", "expected"), [("", "commandcenter.E001"), ("*", "commandcenter.W003")])
def test_check_deploy_flags_missing_or_wildcard_hosts(hosts: str, expected: str) -> None:
    result = check(ALLOWED_HOSTS=hosts)
    assert result.returncode != 0
    assert expected in result.stderr + result.stdout


def test_production_refuses_to_start_without_a_secret_key() -> None:
    result = check(SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY is required when DEBUG is off" in result.stderr


@pytest.mark.slow
def test_production_refuses_to_start_with_an_unauthenticated_alert_webhook() -> None:
    result = check(WEBHOOK_TOKEN="")
    assert result.returncode != 0
    assert "WEBHOOK_TOKEN or WEBHOOK_HMAC_SECRET" in result.stderr and "WEBHOOK_ALLOW_UNAUTHENTICATED" in result.stderr


@pytest.mark.slow
def test_an_hmac_secret_alone_authenticates_the_webhook() -> None:
    result = check(WEBHOOK_TOKEN="", WEBHOOK_HMAC_SECRET="an-hmac-secret-for-the-check")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_explicit_opt_out_starts_and_check_deploy_still_names_the_open_webhook() -> None:
    result = check(WEBHOOK_TOKEN="", WEBHOOK_ALLOW_UNAUTHENTICATED="true")
    assert "ImproperlyConfigured" not in result.stderr
    assert result.returncode != 0 and "alerts.W001" in result.stderr + result.stdout


@pytest.mark.slow
def test_the_image_build_collects_static_files_with_the_settings_it_gives(tmp_path: Path) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    line = re.search(r"&& ((?:[A-Z_]+=\S+ )+)python manage\.py collectstatic", dockerfile)
    assert line, "the Dockerfile no longer collects static files with its own settings"
    given = dict(item.split("=", 1) for item in line.group(1).split())
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--dry-run"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "VAR_DIR": str(tmp_path), "OTEL_SDK_DISABLED": "true", **given},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
