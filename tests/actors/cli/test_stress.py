"""``cmdist stress`` end to end, small: the real hierarchy, files, SQLite and faults; a
check that fails is reported as failed. Never timings."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from actors import DPInfo, SiteInfo, check_root, default_hierarchy
from actors.cli._main import main
from actors.cli._stress import plan, root_checks

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
            "no job or send request left (DistributionJobs)": True,
            "every fault recovered": True,
            HASHES: True,
            "no file in any library that no manifest references": True,
            "databases, manifests and Installed rows sound": True,
        }
        assert all(c["checked"] > 0 for c in run["checks"])
        faults = {f["kind"]: f for f in run["faults"]}
        assert faults["crash"]["where"] == "PS1/PkgXferMgr"
        assert faults["crash"]["fired"] == 1  # restarted once by its supervisor
        assert faults["link cut"]["injected"] == 9
        # a cut fires once its random offset has crossed its link: most do, not all
        assert 0 <= faults["link cut"]["fired"] <= 9
        assert faults["link down"]["injected"] == 1
        assert all(f["recovered"] for f in run["faults"])
    # PS1's packages to its 4 standard DPs, PS2's to its one, P01's to its DP and pull DP
    assert result["deliveries"] == 10 * 4 + 10 + 10 * 2
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


def test_the_plan_today_each_primary_to_its_own_dps() -> None:
    assert plan(*_hierarchy(), whole_hierarchy=False) == {
        "PS1": (
            "PS1SITE.CONTOSO.COM",
            "PS1DP1.CONTOSO.COM",
            "PS1DP2.CONTOSO.COM",
            "PS1SYS.CONTOSO.COM",
        ),
        "PS2": ("PS2DP1.CONTOSO.COM",),
        "P01": ("P01DP1.CONTOSO.COM", "P01PDP1.CONTOSO.COM"),
    }


def test_the_whole_hierarchy_plan_creates_at_the_cas_too_and_targets_every_dp() -> None:
    sites, dps = _hierarchy()
    every = tuple(d.name for d in dps)
    assert "SS1DP1.CONTOSO.COM" in every
    assert "P01PDP1.CONTOSO.COM" in every
    assert plan(sites, dps, whole_hierarchy=True) == {
        code: every for code in ("CS1", "PS1", "PS2", "P01")
    }
