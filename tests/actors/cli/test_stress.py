"""``cmdist stress`` end to end, small: the real hierarchy, files, SQLite and faults; a
check that fails is reported as failed. Never timings."""

from __future__ import annotations

import contextlib
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest

from actors import DPInfo, Hierarchy, SiteInfo, check_root, default_hierarchy
from actors.cli._main import main
from actors.cli._stress import WORK_CHECK, _work_check, plan, root_checks
from actors.testing import cut_link, link_cuts, pending_work, write_tree
from tests.actors.flow_helpers import TIMEOUT, open_hierarchy, until
from tests.actors.test_flow_pulldp import DP, PULL

# a tenth of the default time scale: retry delays of 1800 s take 0.18 s
FAST = ["--time-scale", "0.0001", "--timeout", "60", "--concurrency", "8"]
HASHES = "every file's hash verified on every DP"


@pytest.fixture(scope="module")
def stress_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], int]:
    """One small run with faults, shared by the tests that read what it left."""
    root = tmp_path_factory.mktemp("stress") / "run"
    out = io.StringIO()  # capsys is per test; the run is per module
    with contextlib.redirect_stdout(out):
        code = main(["stress", "--packages", "30", "--json", "--root", str(root), *FAST])
    return root, json.loads(out.getvalue().strip().splitlines()[-1]), code


def test_a_small_run_with_faults_passes_every_check(
    stress_run: tuple[Path, dict[str, Any], int],
) -> None:
    root, result, code = stress_run
    assert result["ok"] is True, [c for r in (result, result["half"]) for c in r["checks"]]
    assert code == 0
    assert result["packages"] == 30
    assert result["half"]["packages"] == 15
    assert result["half"]["ok"] is True
    for run in (result, result["half"]):
        assert {c["name"]: c["ok"] for c in run["checks"]} == {
            "every package Installed on every targeted DP at its current version": True,
            WORK_CHECK: True,
            "every fault recovered": True,
            HASHES: True,
            "no file in any library that no manifest references": True,
            "databases, manifests and Installed rows sound": True,
        }
        assert all(c["checked"] > 0 for c in run["checks"])
        faults = {f["kind"]: f for f in run["faults"]}
        assert faults["crash"]["where"] == "PS1/PkgXferMgr"
        assert faults["crash"]["fired"] == 1  # restarted once by its supervisor
        # odd tenths cut a link to a DP, even tenths a link between sites
        assert faults["link cut"]["injected"] == 5
        assert faults["site link cut"]["injected"] == 4
        # a cut fires once its random offset has crossed its link: most do, not all
        assert 0 <= faults["link cut"]["fired"] <= 5
        assert 0 <= faults["site link cut"]["fired"] <= 4
        assert faults["link down"]["injected"] == 1
        assert all(f["recovered"] for f in run["faults"])
    # created at CS1, PS1, PS2 and P01, each to all 8 DPs of the hierarchy
    assert result["dps"] == 8
    assert result["deliveries"] == 30 * 8
    assert result["updates"] == 3
    assert result["redistributes"] == 1
    assert result["root"] == str((root / "full").resolve())
    for key in ("seconds", "packages_per_s", "peak_rss_mb", "database_mb", "library_mb"):
        assert result[key] > 0


async def test_a_damaged_dp_file_fails_the_hash_check(
    stress_run: tuple[Path, dict[str, Any], int],
) -> None:
    root, _, _ = stress_run
    config = default_hierarchy(root=root / "full" / "data")
    assert all(c.ok for c in root_checks(await check_root(config)))
    victim = sorted((config.require_data_root() / "PS1DP1.CONTOSO.COM").glob("*/FileLib/*/*"))[0]
    data = bytearray(victim.read_bytes())
    data[0] ^= 0xFF
    victim.write_bytes(bytes(data))

    checks = {c.name: c for c in root_checks(await check_root(config))}
    assert not checks[HASHES].ok
    assert checks[HASHES].failed == 1
    assert victim.name in checks[HASHES].detail
    assert checks["no file in any library that no manifest references"].ok


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["stress", "--packages", "0"])
    assert info.value.code == 2
    assert "--packages and --concurrency must be >= 1" in capsys.readouterr().err


def _hierarchy() -> tuple[list[SiteInfo], list[DPInfo]]:
    config = default_hierarchy(root=Path("/nonexistent"))
    sites = [SiteInfo(s.code, s.type, s.server, s.parent, s.name) for s in config.sites]
    dps = [DPInfo(d.name, d.site, d.nal_path, d.pull, d.sources) for d in config.dps]
    return sites, dps


def test_the_whole_hierarchy_plan_creates_at_the_cas_too_and_targets_every_dp() -> None:
    sites, dps = _hierarchy()
    every = tuple(d.name for d in dps)
    assert "SS1DP1.CONTOSO.COM" in every
    assert "P01PDP1.CONTOSO.COM" in every
    assert plan(sites, dps) == {code: every for code in ("CS1", "PS1", "PS2", "P01")}


async def test_work_left_is_reported_by_site_and_kind_until_it_drains(tmp_path: Path) -> None:
    """A CAS package on the pull DP alone: its job stays at P01 (no source DP holds the
    version, 8212 and retries), and the work check names it; once P01DP1 has it too,
    everything drains. The package file crossed a link between sites cut after 100
    bytes (the sender resumed it)."""
    src = write_tree(tmp_path / "src", {"a.bin": random.Random(3).randbytes(3000)})
    async with open_hierarchy(tmp_path) as h:
        cut_link(h, "CS1", "P01", after_bytes=100)
        pkg = await h.create_package("Left", src, site="CS1")
        await h.distribute(pkg, [PULL])
        await until(lambda: _retrying(h, pkg.pkg_id))
        check = await _work_check(h, timeout=0)
        assert not check.ok
        assert check.name == WORK_CHECK
        assert "P01: jobs 1" in check.detail
        assert (await pending_work(h))["P01"].jobs == 1
        await h.distribute(pkg, [DP])
        await h.wait(pkg, timeout=TIMEOUT)
        check = await _work_check(h, timeout=TIMEOUT)
        assert check.ok, check.detail
        assert check.failed == 0
        assert all(w.total == 0 for w in (await pending_work(h)).values())
        assert link_cuts(h, "CS1", "P01") == 1


async def _retrying(h: Hierarchy, pkg_id: str) -> bool:
    return {s.dp: s.state for s in await h.content_status(pkg_id)}.get(PULL) == "Retrying"
