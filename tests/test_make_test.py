"""`make test` on a machine that lacks the programs the tests drive: it installs them through
scripts/install-test-deps (as .ci/run does), or stops at once with the command to run."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_make_test_runs_the_install_step_that_ci_runs() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: .*\btest-deps\b", makefile, re.MULTILINE)
    assert re.search(r"^test-deps:.*\n\t@scripts/install-test-deps$", makefile, re.MULTILINE)
    assert "scripts/install-test-deps" in (ROOT / ".ci" / "run").read_text()


def test_without_the_programs_or_the_right_to_install_them_it_stops_at_once_with_the_command(tmp_path: Path) -> None:
    # A user who is not root, on a PATH with neither prometheus, alertmanager, sudo nor apt-get.
    fake_id = tmp_path / "id"
    fake_id.write_text("#!/bin/bash\necho 1000\n")
    fake_id.chmod(0o755)
    started = time.monotonic()
    result = subprocess.run(
        ["/bin/bash", str(ROOT / "scripts" / "install-test-deps")],
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert time.monotonic() - started < 5
    assert result.returncode == 2, result.stdout + result.stderr
    assert "apt-get update && apt-get install -y --no-install-recommends prometheus prometheus-alertmanager" in (
        result.stderr
    )
