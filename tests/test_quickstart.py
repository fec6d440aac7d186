import subprocess

import pytest
from django.conf import settings


@pytest.mark.slow
def test_make_run_starts_on_sqlite_and_a_triggered_run_succeeds() -> None:
    """The README's first command, from a fresh state directory: migrate, sync, serve, work, stop on Ctrl-C."""
    result = subprocess.run(
        ["scripts/smoke-quickstart"], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "quick start smoke: OK" in result.stdout
