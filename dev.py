"""Project tasks on a fresh machine with only python3: set up ``.venv`` and run.

    python3 dev.py demo     # set everything up, run ``cmdist demo``
    python3 dev.py test     # set everything up, run ruff, mypy and the whole test suite
    python3 dev.py bench NAME [ARGS...]   # set everything up, run ``python -m bench NAME``

The virtual environment is project-local and reused; it is reinstalled only
when ``pyproject.toml`` changes (a hash stamp inside ``.venv``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".cmdist-installed"
PACKAGES = ["bus", "contentlib", "actors", "bench"]


def _run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    rc = subprocess.call([str(c) for c in cmd], cwd=ROOT)
    if rc != 0:
        sys.exit(rc)


def setup() -> None:
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == want and PY.exists():
        return
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    _run(PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", ".[test]")
    STAMP.write_text(want)


def demo(args: list[str]) -> None:
    _run(BIN / "cmdist", "demo", *args)


def test(args: list[str]) -> None:
    _run(PY, "-m", "ruff", "check", ".")
    _run(PY, "-m", "ruff", "format", "--check", ".")
    _run(PY, "-m", "mypy")
    _run(PY, "-m", "pytest", *args)


def bench(args: list[str]) -> None:
    _run(PY, "-m", "bench", *args)


def main() -> None:
    tasks = {"demo": demo, "test": test, "bench": bench, "setup": lambda _a: None}
    if len(sys.argv) < 2 or sys.argv[1] not in tasks:
        print(__doc__)
        sys.exit(2)
    setup()
    tasks[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
