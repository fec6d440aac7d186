"""Creates ``var/bench-peers-venv`` and installs the ``bench-peers`` dependency group into it.

``python -m bench.peers.install`` — idempotent: a venv whose marker matches the group is left as it is.
Only the group's requirements are installed (not the service itself), so the peers' versions of shared
libraries never meet the service's.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "var" / "bench-peers-venv"
PYTHON = VENV / "bin" / "python"


def requirements() -> list[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(data["project"]["optional-dependencies"]["bench-peers"])


def _marker(reqs: list[str]) -> str:
    return hashlib.sha256("\n".join(reqs).encode()).hexdigest()


def ensure(quiet: bool = True) -> Path:
    """Returns the peers' interpreter, creating and filling the venv first when needed."""
    reqs = requirements()
    marker = VENV / ".installed"
    if PYTHON.exists() and marker.exists() and marker.read_text() == _marker(reqs):
        return PYTHON
    if not PYTHON.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    flags = ["-q"] if quiet else []
    subprocess.run([str(PYTHON), "-m", "pip", "install", *flags, "--upgrade", "pip"], check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", *flags, *reqs], check=True)
    marker.write_text(_marker(reqs))
    return PYTHON


if __name__ == "__main__":
    print(ensure(quiet="-v" not in sys.argv))
