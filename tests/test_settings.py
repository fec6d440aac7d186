"""Settings come from the environment through typed helpers, and every variable is documented."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config import env

ROOT = Path(__file__).resolve().parent.parent


def test_every_variable_the_settings_read_is_in_env_example() -> None:
    read = set(
        re.findall(
            r'env(?:str|secret|bool|int|float|list|choice|url)\(\s*"([A-Z0-9_]+)"',
            (ROOT / "config/settings.py").read_text(),
        )
    )
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert read - documented == set()


@pytest.mark.parametrize(
    ("helper", "value", "message"),
    [
        (lambda: env.envbool("X_FLAG", False), "maybe", "X_FLAG='maybe' is not a boolean"),
        (lambda: env.envint("X_NUM", 1, minimum=1), "0", "X_NUM=0 is below the minimum of 1"),
        (lambda: env.envint("X_NUM", 1), "ten", "X_NUM='ten' is not an integer"),
        (lambda: env.envfloat("X_NUM", 1.0), "nan", "X_NUM='nan' is not a finite number"),
        (lambda: env.envchoice("X_CHOICE", "a", ("a", "b")), "c", "X_CHOICE='c' must be one of: a, b"),
        (lambda: env.envurl("X_URL"), "ftp://x", "X_URL='ftp://x' is not an http(s) URL"),
    ],
)
def test_nonsense_is_rejected_with_the_variable_named(monkeypatch: pytest.MonkeyPatch, helper, value, message) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(re.match(r"(X_[A-Z]+)", message).group(1), value)  # type: ignore[union-attr]
    with pytest.raises(ImproperlyConfigured) as exc:
        helper()
    assert str(exc.value).startswith(message)


def test_secrets_can_come_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s").write_text("from-a-file\n")
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "s"))
    assert env.envsecret("X_SECRET") == "from-a-file"


def start_django(**env: str) -> subprocess.CompletedProcess[str]:
    """Loads the settings in a fresh interpreter with only ``env`` (and PATH) in the environment."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup()",
        ],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
    )


def test_production_without_a_secret_key_refuses_to_start() -> None:
    result = start_django(DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY is required when DEBUG is off" in result.stderr


def test_a_negative_retention_stops_the_process_with_the_variable_named() -> None:
    result = start_django(DEBUG="true", RUN_RETENTION_DAYS="-1")
    assert result.returncode != 0
    assert "RUN_RETENTION_DAYS=-1 is below the minimum of 0" in result.stderr
