"""``cmdist check``: a data root a real run left is clean; each kind of damage is named.

The root is built once per module by running the real hierarchy (create, distribute,
update, remove, delete) and copied for each test, which then damages its copy.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors._runtime import CheckReport, check_root
from actors.cli._main import main
from actors.config import load_hierarchy
from bus import run
from tests.actors.flow_helpers import (
    DP1,
    DP2,
    HIERARCHY,
    ROOT,
    SITE,
    SITE_DP,
    SYS,
    TIMEOUT,
    nal,
    open_hierarchy,
    write_tree,
)

SITE_DB = Path("PS1SITE.CONTOSO.COM") / "site.db"
CMDIST = [sys.executable, "-c", "import sys; from actors.cli._main import main; sys.exit(main())"]


class _Built(msgspec.Struct, frozen=True):
    root: Path
    updated: str  # on DP1, DP2 and the site server's DP, at version 2
    removed: str  # on DP1; removed from SYS
    deleted: str  # gone everywhere


async def _build(tmp: Path) -> _Built:
    a = write_tree(tmp / "A", {"a.txt": b"a\n" * 1000, "bin/big.bin": os.urandom(300_000)})
    b = write_tree(tmp / "B", {"b.txt": b"b\n" * 100})
    c = write_tree(tmp / "C", {"c.txt": b"c\n"})
    async with open_hierarchy(tmp) as h:
        pa = await h.create_package("A", a, site=SITE)
        pb = await h.create_package("B", b, site=SITE)
        pc = await h.create_package("C", c, site=SITE)
        await h.distribute(pa, [DP1, DP2, SITE_DP])
        await h.distribute(pb, [DP1, SYS])
        await h.distribute(pc, [DP1])
        for pkg in (pa, pb, pc):
            await h.wait(pkg, timeout=TIMEOUT)
        (a / "a.txt").write_bytes(b"a, version 2\n")
        await h.update(pa)
        await h.remove(pb, [SYS])
        await h.delete(pc, timeout=TIMEOUT)
        for pkg in (pa, pb):
            await h.wait(pkg, timeout=TIMEOUT)
    return _Built(tmp / "data", pa.pkg_id, pb.pkg_id, pc.pkg_id)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> _Built:
    """Sync, and it returns: the hierarchy runs and closes inside, on its own loop."""
    return run(_build, tmp_path_factory.mktemp("built"))


@pytest.fixture
def root(built: _Built, tmp_path: Path) -> Path:
    """A copy of the built data root for this test to damage."""
    copy = tmp_path / "data"
    shutil.copytree(built.root, copy, symlinks=True)
    return copy


def _library(root: Path, dp: str) -> Path:
    folder = root / dp / "DP" if dp == SITE_DP else root / dp
    return folder / "SCCMContentLib"


def _files(library: Path) -> list[Path]:
    return sorted(p for p in (library / "FileLib").glob("*/*"))


def _check(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = main(["check", "--root", str(root), "--json"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _problems(report: Any, what: str) -> list[dict[str, str]]:
    return [p for p in report["problems"] if p["what"] == what]


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under the root: bytes and mtime. Tests run as root, so "read-only" is
    shown by nothing changing, not by permissions."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _sql(root: Path, sql: str, args: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(root / SITE_DB)
    with conn:
        conn.execute(sql, args)
    conn.close()


# -- clean -------------------------------------------------------------------------------


def test_the_root_a_real_run_left_is_clean_and_checking_writes_nothing(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(root)
    code, report = _check(root, capsys)
    assert report["problems"] == []
    assert (code, report["ok"]) == (0, True)
    checked = report["checked"]
    assert checked["databases"] == 5  # every site of the default hierarchy
    assert checked["packages"] == 2  # the deleted one is gone
    assert checked["installed"] == 4  # A on DP1, DP2, PS1SITE; B on DP1
    assert checked["manifests"] >= 5
    assert checked["files"] > 0
    assert checked["bytes"] >= 300_000
    assert _snapshot(root) == before


async def test_check_root_is_a_function_too(root: Path) -> None:
    report = await check_root(load_hierarchy(HIERARCHY, root=root))
    assert isinstance(report, CheckReport)
    assert report.ok
    assert report.problems == ()


def test_human_output_ends_with_the_verdict(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--root", str(root)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].endswith("checked: no problems found")
    assert "5 site databases, 2 packages, 4 Installed DP rows" in lines[-1]


# -- damage, each named ------------------------------------------------------------------


def test_a_flipped_byte_in_a_dp_file_is_a_corrupt_file(
    root: Path, built: _Built, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = max(_files(_library(root, DP1)), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    code, report = _check(root, capsys)
    assert (code, report["ok"]) == (1, False)
    [problem] = report["problems"]
    assert (problem["where"], problem["what"]) == (DP1, "corrupt file")
    assert victim.name in problem["detail"]
    assert f"{built.updated}.2 'bin/big.bin'" in problem["detail"]


def test_a_deleted_dp_file_is_a_missing_file(
    root: Path, built: _Built, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = _files(_library(root, DP2))[0]
    victim.unlink()
    code, report = _check(root, capsys)
    assert code == 1
    [problem] = report["problems"]
    assert (problem["where"], problem["what"]) == (DP2, "missing file")
    assert victim.name in problem["detail"]
    assert built.updated in problem["detail"]


def test_a_truncated_manifest_is_damaged_and_its_dp_not_installed(
    root: Path, built: _Built, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _library(root, DP1) / "DataLib" / f"{built.updated}.2.json"
    manifest.write_bytes(manifest.read_bytes()[:40])
    code, report = _check(root, capsys)
    assert code == 1
    [damaged] = _problems(report, "damaged manifest")
    assert damaged["where"] == DP1
    assert str(manifest) in damaged["detail"]
    [missing] = _problems(report, "not installed")
    assert missing["where"] == DP1
    assert f"package {built.updated}" in missing["detail"]
    assert _problems(report, "orphan file") == []  # unknowable while a manifest is damaged


def test_a_manifest_whose_entries_do_not_match_its_hash_is_damaged(
    root: Path, built: _Built, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _library(root, DP2) / "DataLib" / f"{built.updated}.2.json"
    data = json.loads(manifest.read_bytes())
    data["files"] = data["files"][1:]  # an entry dropped, the content hash left as it was
    manifest.write_text(json.dumps(data))
    code, report = _check(root, capsys)
    assert code == 1
    [damaged] = _problems(report, "damaged manifest")
    assert damaged["where"] == DP2
    assert "content hash" in damaged["detail"]


def test_an_unreferenced_filelib_file_is_an_orphan(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sha = "AB" * 32
    orphan = _library(root, DP2) / "FileLib" / sha[:4] / sha
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"left behind\n")
    code, report = _check(root, capsys)
    assert code == 1
    [problem] = report["problems"]
    assert (problem["where"], problem["what"]) == (DP2, "orphan file")
    assert str(orphan) in problem["detail"]


def test_content_on_a_dp_the_package_does_not_target_is_an_orphan(
    root: Path, built: _Built, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = _library(root, DP1), _library(root, SYS)
    manifest = source / "DataLib" / f"{built.removed}.1.json"
    shutil.copy(manifest, target / "DataLib" / manifest.name)
    for path in _files(source):
        copy = target / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)  # (files of other packages become orphans too)
    code, report = _check(root, capsys)
    assert code == 1
    [problem] = _problems(report, "orphan content")
    assert problem["where"] == SYS
    assert (
        f"{built.removed}.1: package {built.removed} does not target this DP" in (problem["detail"])
    )


def test_a_job_for_a_missing_package_is_an_orphan_row(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sql(
        root,
        "INSERT INTO DistributionJobs (DPID, PkgID, PackageVersion, State, Action, CreationTime)"
        " VALUES (1, 'PS1FFFFF', 1, 0, 1, '')",
    )
    code, report = _check(root, capsys)
    assert code == 1
    [problem] = report["problems"]
    assert problem["what"] == "orphan row"
    assert problem["where"].startswith(f"{SITE} site database ")
    assert "PS1FFFFF" in problem["detail"]
    assert "DistributionJobs" in problem["detail"]


def test_an_installed_row_for_a_dp_without_the_content_is_named(
    root: Path, built: _Built, capsys: pytest.CaptureFixture[str]
) -> None:
    _sql(
        root,
        "INSERT INTO PkgStatus (ID, Type, SiteCode, PkgServer, Status, SourceVersion)"
        " VALUES (?, 2, ?, ?, 3, 1)",
        (built.removed, SITE, nal(DP2)),
    )
    code, report = _check(root, capsys)
    assert code == 1
    [problem] = report["problems"]
    assert (problem["where"], problem["what"]) == (DP2, "not installed")
    assert f"package {built.removed}" in problem["detail"]
    assert "holds: nothing" in problem["detail"]


def _emptied(db: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"")


def _gone(db: Path) -> None:
    for path in db.parent.glob("site.db*"):
        path.unlink()


@pytest.mark.parametrize(
    ("damage", "detail"),
    [(_emptied, "empty (0 bytes)"), (_gone, "missing, while the library")],
    ids=["empty", "gone while the library holds content"],
)
def test_a_damaged_or_lost_site_database_is_named_and_left_as_it_is(
    root: Path, damage: Callable[[Path], None], detail: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = root / SITE_DB
    damage(db)
    before = _snapshot(root)
    code, report = _check(root, capsys)
    assert code == 1
    [problem] = report["problems"]
    assert problem["what"] == "database"
    assert str(db) in problem["where"]
    assert detail in problem["detail"]
    assert _snapshot(root) == before


def test_every_problem_is_one_line_and_the_exit_code_says_so_in_a_real_process(
    root: Path, built: _Built
) -> None:
    _files(_library(root, DP2))[0].unlink()
    _sql(root, "DELETE FROM SMSPackages WHERE PkgID = ?", (built.removed,))
    done = subprocess.run(
        [*CMDIST, "check", "--root", str(root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1].endswith("problems found")
    assert any(line.startswith(f"{DP2}: missing file: ") for line in lines)
    # the package's rows and content without it: each named
    assert any(f"{DP1}: orphan content: {built.removed}.1" in line for line in lines)
    assert any("PkgServers" in line and built.removed in line for line in lines)
    assert done.stderr == ""


def test_a_missing_root_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--root", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
