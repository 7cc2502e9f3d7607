"""Packaging: what a user gets from ``pip install cmdist``, not from this checkout.

A wheel is built from a copy of the project and installed, without its dependencies, into a
fresh virtual environment that borrows this one's site-packages for them (offline, a few
seconds); the installed ``cmdist demo`` then runs from a folder that is not the repository.
The exports tests, in the style of trio's ``test_exports.py``, check that every name a
public ``__all__`` promises is there.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
import pkgutil
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PUBLIC_PACKAGES = ("bus", "contentlib", "actors")
FACADE = (
    "Hierarchy",
    "Package",
    "ContentStatus",
    "StatusMessage",
    "TransferProgress",
    "Subscription",
    "errors",
)
BUILD_FILES = ("pyproject.toml", "README.md")
"""What the build reads besides the packages (the README is the project's long description)."""
SUBPROCESS_TIMEOUT = 120.0
"""A safety net against a hung child, not a measure: each child takes about a second."""

# -- exports -----------------------------------------------------------------------------


def _public_modules() -> list[str]:
    """Every public package and module: no part of its dotted name starts with ``_``."""
    names: list[str] = []
    for top in PUBLIC_PACKAGES:
        names.append(top)
        package = importlib.import_module(top)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{top}."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                names.append(info.name)
    return names


PUBLIC_MODULES = _public_modules()


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_name_in_all_resolves_once(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        assert not hasattr(module, "__path__"), f"package {name} has no __all__"
        pytest.skip(f"{name} defines no __all__")
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what {name} does not have: {missing}"
    assert not [n for n in exported if n.startswith("_")], f"{name}.__all__ exports a _name"


def test_the_public_subpackages_are_checked() -> None:
    assert {"actors.sitedb", "actors.errors", "actors.config"} <= set(PUBLIC_MODULES)


def test_the_facade_names_import_from_actors() -> None:
    import actors
    from actors import (  # noqa: F401  (the import is the test)
        ContentStatus,
        Hierarchy,
        Package,
        StatusMessage,
        Subscription,
        TransferProgress,
        errors,
    )

    assert set(FACADE) <= set(actors.__all__)


# -- the default hierarchy as package data ---------------------------------------------------


def test_the_packaged_default_is_the_repository_file() -> None:
    packaged = importlib.resources.files("actors").joinpath("hierarchy.toml")
    assert packaged.read_bytes() == (REPO / "hierarchy.toml").read_bytes()


# -- a wheel, installed -------------------------------------------------------------------


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def _isolated_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would put this checkout on ``sys.path``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return env | extra


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the project: a build in the checkout would write
    ``build/`` and ``*.egg-info`` under the feet of whoever else works in it."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    for package in PUBLIC_PACKAGES:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in BUILD_FILES:
        shutil.copy2(REPO / name, src / name)
    dist = work / "dist"
    _run(
        sys.executable,
        *("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"),
        *("--disable-pip-version-check", "-w", dist, src),
        cwd=work,
    )
    (built,) = dist.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel; its dependencies come from this venv's site-packages
    through a ``.pth`` line (a path line: the ``.pth`` files there, this checkout's editable
    install among them, are not run). Returns the venv's scripts folder."""
    env = tmp_path_factory.mktemp("venv")
    venv.create(env, with_pip=False, symlinks=os.name != "nt")
    scripts = env / ("Scripts" if os.name == "nt" else "bin")
    python = scripts / ("python.exe" if os.name == "nt" else "python")
    _run(
        sys.executable,
        *("-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q"),
        *("--disable-pip-version-check", wheel),
        cwd=env,
    )
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=env)
    Path(purelib.strip(), "cmdist-dependencies.pth").write_text(
        sysconfig.get_path("purelib") + "\n"
    )
    return scripts


def test_the_wheel_ships_the_default_hierarchy_and_the_type_markers(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert z.read("actors/hierarchy.toml") == (REPO / "hierarchy.toml").read_bytes()
    assert {f"{p}/py.typed" for p in PUBLIC_PACKAGES} <= names
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]


def test_an_installed_wheel_runs_the_demo_from_any_folder(installed: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "anywhere"
    cwd.mkdir()
    out = _run(
        installed / "cmdist",
        *("demo", "--packages", "1"),
        cwd=cwd,
        env=_isolated_env(TMPDIR=str(tmp_path)),  # where the demo makes its fresh data root
    )
    assert "every package Installed on every DP" in out
    assert f"Data root: {tmp_path}" in out
    assert list(cwd.iterdir()) == []  # nothing written to the current folder


def test_an_installed_wheel_imports_the_facade_from_itself(installed: Path, tmp_path: Path) -> None:
    program = (
        "import actors\n"
        "from actors import Hierarchy, errors\n"
        "from actors.config import default_hierarchy\n"
        "print(actors.__file__)\n"
        "print(default_hierarchy().file)\n"
        "print(Hierarchy.__module__, errors.CmdistError.__name__)\n"
    )
    python = installed / ("python.exe" if os.name == "nt" else "python")
    lines = _run(python, "-c", program, cwd=tmp_path, env=_isolated_env()).splitlines()
    site_packages = installed.parent
    assert Path(lines[0]).is_relative_to(site_packages)
    assert Path(lines[1]).is_relative_to(site_packages)
    assert Path(lines[1]).name == "hierarchy.toml"
    assert lines[2] == "actors._runtime._hierarchy CmdistError"
