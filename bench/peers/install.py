"""Creates ``var/bench-peers-venv`` and installs the ``bench-peers`` dependency group into it.

``python -m bench.peers.install`` — idempotent: a venv whose marker matches the group and the interpreter is left
as it is; one made by another Python version is made anew, so the peers run on the same Python as the service.
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
    return hashlib.sha256("\n".join([sys.version, *reqs]).encode()).hexdigest()


def _version(python: Path) -> str:
    version = subprocess.run([str(python), "-c", "import sys; print(sys.version)"], capture_output=True, text=True)
    return version.stdout.rstrip("\n")


def ensure(quiet: bool = True) -> Path:
    """Returns the peers' interpreter, creating and filling the venv first when needed."""
    reqs = requirements()
    marker = VENV / ".installed"
    if PYTHON.exists() and marker.exists() and marker.read_text() == _marker(reqs):
        return PYTHON
    if not PYTHON.exists() or _version(PYTHON) != sys.version:
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    flags = ["-q"] if quiet else []
    subprocess.run([str(PYTHON), "-m", "pip", "install", *flags, "--upgrade", "pip"], check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", *flags, *reqs], check=True)
    marker.write_text(_marker(reqs))
    return PYTHON


if __name__ == "__main__":
    print(ensure(quiet="-v" not in sys.argv))
