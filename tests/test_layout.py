"""The import rule (ARCHITECTURE.md): who may import whom, read from the source.

Components (``actors.site``, ``actors.dp``) import ``bus``, ``contentlib``, the
infrastructure (``actors.sitedb``, ``actors.status``, ``actors.network``), the leaves
(errors, config, addresses, crash points) and their own package; a site component may
also import ``actors.dp`` (the messages a DP receives and the layout both sides share).
Only ``actors._runtime`` knows every component; ``actors.cli`` imports only the facade,
and ``actors.testing``: ``cmdist stress`` injects faults (link cuts, a link down, a crashed
component) and reads probes (jobs left, disk usage) that reach inside a running hierarchy,
which the facade does not offer an admin and ``actors.testing`` offers tests and embedders.
``bus`` and ``contentlib`` know nothing of each other or of ``actors``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEAVES = {"actors.errors", "actors.config", "actors.addresses", "actors._crashpoints"}
INFRA = {"actors.sitedb", "actors.status", "actors.network"}
EXTERNAL = {"bus", "contentlib"}

ALLOWED: dict[str, set[str]] = {
    "actors.site": EXTERNAL | INFRA | LEAVES | {"actors.site", "actors.dp"},
    "actors.dp": EXTERNAL | INFRA | LEAVES | {"actors.dp"},
    "actors.drs": EXTERNAL | INFRA | LEAVES | {"actors.drs"},
    "actors.pulldp": EXTERNAL | INFRA | LEAVES | {"actors.pulldp", "actors.dp"},
    "actors.network": {"bus"} | LEAVES | {"actors.network"},
    "actors.status": {"bus"} | LEAVES | {"actors.sitedb", "actors.status"},
    "actors.sitedb": LEAVES | {"actors.sitedb"},
    "actors.cli": {"actors", "actors.errors", "actors.cli", "actors.testing", "bus"},
    "bus": {"bus"},
    "contentlib": {"contentlib"},
}


def _package_of(module: str) -> str:
    """The rule's unit a module belongs to: ``actors.site._distmgr`` -> ``actors.site``."""
    parts = module.split(".")
    if parts[0] != "actors" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "actors":  # ``from actors import addresses`` is a module
                found.update(
                    f"actors.{a.name}" if f"actors.{a.name}" in LEAVES else "actors"
                    for a in node.names
                )
            else:
                found.add(node.module)
    return {m for m in found if m.split(".")[0] in {"actors", "bus", "contentlib"}}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for top in ("actors", "bus", "contentlib"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.append((".".join(parts), path))
    return out


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda v: str(v))
def test_module_imports_only_what_its_role_may(module: str, path: Path) -> None:
    unit = _package_of(module)
    allowed = ALLOWED.get(unit)
    if allowed is None:
        return  # the facade, the composition root and the leaves may import what they need
    wrong = sorted(m for m in _imports(path) if _package_of(m) not in allowed)
    assert not wrong, f"{module} ({unit}) imports {wrong}; see ARCHITECTURE.md"


def test_the_rule_covers_every_role() -> None:
    units = {_package_of(m) for m, _ in _modules()}
    assert {
        "actors.site",
        "actors.dp",
        "actors.pulldp",
        "actors.cli",
        "actors._runtime",
        "bus",
    } <= units


SQL_CALLS = (".execute(", ".executemany(", ".fetchall(", ".fetchone(", ".scalar(")


@pytest.mark.parametrize(
    ("module", "path"),
    [(m, p) for m, p in _modules() if m.startswith("actors") and not m.startswith("actors.sitedb")],
    ids=lambda v: str(v),
)
def test_sql_lives_only_in_sitedb(module: str, path: Path) -> None:
    """One place for SQL: components read through SiteDatabase methods, write through ops."""
    text = path.read_text()
    assert not [call for call in SQL_CALLS if call in text], f"{module} runs SQL itself"
