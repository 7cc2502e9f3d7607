"""``cmdist demo`` and ``cmdist status`` end to end: real hierarchy, real files, real SQLite."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import actors.cli._main
from actors.cli._main import main

DEMO_DPS = {  # created at CS1, one DP at each other site
    "PS1DP1.CONTOSO.COM",
    "PS2DP1.CONTOSO.COM",
    "SS1DP1.CONTOSO.COM",
    "P01DP1.CONTOSO.COM",
}
FAST = ["--scale", "0.005", "--time-scale", "0.001", "--timeout", "60"]


def _json(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_demo_installs_every_package_everywhere_and_status_reads_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "run"
    assert main(["demo", "--root", str(root), "--packages", "3", "--json", *FAST]) == 0
    demo = _json(capsys)

    assert demo["ok"] is True
    assert demo["root"] == str(root.resolve())
    names = [p["name"] for p in demo["status"]]
    assert names[:3] == ["Docs01", "Tool02", "Image03"]
    assert names[3] in {f"{n}-pull" for n in names[:3]}  # the smallest again, at P01
    for pkg in demo["status"]:
        want = {"P01DP1.CONTOSO.COM", "P01PDP1.CONTOSO.COM"} if pkg["site"] == "P01" else DEMO_DPS
        assert {d["dp"] for d in pkg["dps"]} == want
        for dp in pkg["dps"]:
            assert (dp["state"], dp["version"]) == ("Installed", pkg["version"]), (pkg, dp)
    # the largest package was updated (version 2), the others were not
    assert [p["version"] for p in demo["status"]] == [1, 1, 2, 1]
    assert demo["pull_dp_ms"] > 0
    assert demo["packages"] == 3
    assert demo["bytes_delivered"] == demo["bytes"] * 4
    assert len(demo["per_package"]) == 3
    assert any(Path(p).parent.name == "PS1SITE.CONTOSO.COM" for p in demo["logs"])
    assert (root / "PS1SITE.CONTOSO.COM" / "logs" / "distmgr.log").stat().st_size > 0

    assert main(["status", "--root", str(root), "--json"]) == 0
    status = _json(capsys)
    assert status["installed"] is True
    by_id = sorted(demo["status"], key=lambda p: p["pkg_id"])  # (status: sites in its order)
    assert sorted(status["packages"], key=lambda p: p["pkg_id"]) == by_id


def test_demo_and_status_print_readable_tables_without_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "run"
    assert main(["demo", "--root", str(root), "--packages", "1", *FAST]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # no terminal: no escape codes, no live display
    assert "Docs01   distribute   installed on 4/4 DPs" in out
    assert "pull DP      installed on 1/1 DPs" in out
    assert "Content status" in out
    assert "every package Installed on every DP" in out
    assert f"{root.resolve() / 'PS1SITE.CONTOSO.COM' / 'logs'}: " in out
    assert "distmgr.log" in out

    assert main(["status", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.count("│ Installed ") == 4 + 2  # PS1's 4 DPs; P01's source and pull DP
    assert f"2 packages, 2 Installed on every DP they target; data root {root.resolve()}" in out


def test_status_of_a_missing_root_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert main(["status", "--root", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "does not exist" in err
    assert not missing.exists()  # reading created nothing


def test_status_of_a_root_without_site_databases_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "PS1SITE.CONTOSO.COM").mkdir()
    assert main(["status", "--root", str(tmp_path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "holds no site database" in captured.err
    assert not (tmp_path / "PS1SITE.CONTOSO.COM" / "site.db").exists()


def test_demo_refuses_a_root_in_use_and_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["demo", "--root", str(tmp_path)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]

    assert main(["demo", "--root", str(tmp_path / "r"), "--hierarchy", str(tmp_path / "x")]) == 2
    assert "hierarchy file" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        main(["demo", "--packages", "0"])
    assert "--packages" in capsys.readouterr().err


# -- read-only status, check after a demo, pipes and Ctrl-C --------------------------------

CMDIST = [sys.executable, "-c", "import sys; from actors.cli._main import main; sys.exit(main())"]
REPO = Path(__file__).resolve().parents[3]


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under the root, bytes and mtime (tests run as root: a chmod'ed read-only
    copy would not stop a write, so "nothing written" is checked this way)."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--root", str(root), "--packages", "2", "--json", *FAST]) == 0
    return root


def test_status_and_check_only_read(demo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    before = _snapshot(demo_root)
    assert main(["status", "--root", str(demo_root), "--json"]) == 0
    assert _json(capsys)["installed"] is True
    assert main(["check", "--root", str(demo_root), "--config", str(REPO / "hierarchy.toml")]) == 0
    assert capsys.readouterr().out.strip().endswith("no problems found")
    assert _snapshot(demo_root) == before


def test_status_of_an_empty_site_database_is_an_error_naming_it_and_writes_nothing(
    demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "run"
    shutil.copytree(demo_root, root)
    db = root / "PS1SITE.CONTOSO.COM" / "site.db"
    db.write_bytes(b"")
    before = _snapshot(root)
    assert main(["status", "--root", str(root), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(db) in captured.err
    assert "empty (0 bytes)" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert _snapshot(root) == before


def test_status_to_a_closed_pipe_ends_quietly(demo_root: Path) -> None:
    proc = subprocess.Popen(
        [*CMDIST, "status", "--root", str(demo_root), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # `| head -1` gone before the first write: every write fails
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert err == b""


def test_ctrl_c_in_the_demo_is_one_line_and_exit_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(actors.cli._main, "run", interrupted)
    root = tmp_path / "run"
    assert main(["demo", "--root", str(root), *FAST]) == 130
    err = capsys.readouterr().err
    assert err == f"cmdist demo: interrupted; data root kept at {root.resolve()}\n"
    assert root.is_dir()


def test_a_real_sigint_in_the_demo_is_one_line_and_exit_130(tmp_path: Path) -> None:
    # PS1DP1's link is down: the demo cannot finish (the retry is minutes away), so the
    # signal always lands while it runs, whatever the machine's speed.
    text = (REPO / "hierarchy.toml").read_text()
    link = 'to = "PS1DP1.CONTOSO.COM"\n'
    assert text.count(link) == 1
    (tmp_path / "down.toml").write_text(text.replace(link, link + "down = true\n"))
    root = tmp_path / "run"
    proc = subprocess.Popen(
        [*CMDIST, "demo", "--root", str(root), "--hierarchy", str(tmp_path / "down.toml"), *FAST],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("cmdist demo: 5 packages")  # running now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err == f"cmdist demo: interrupted; data root kept at {root}\n"
    assert root.is_dir()


def test_bench_runs_the_checkouts_benchmarks_in_a_process_of_their_own(
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench"]) == 2  # no name: the usage names every benchmark
    err = capfd.readouterr().err
    assert "distribute" in err
    assert "stress" in err
    assert main(["bench", "distribute", "--help"]) == 0
    assert "--packages" in capfd.readouterr().out
