"""Crash consistency: the driver's workload is SIGKILLed (once or twice, the second time
while it recovers), run again to its end, and the data root must hold exactly what the plan
says (``tests/crash/harness.py`` lists the checks). ``python -m bench crash --kills N`` runs
many more trials; a failing trial is reproduced here by adding its number."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.crash.driver import DPS, SITE_SERVER, journal_path
from tests.crash.harness import (
    CRASH_POINTS,
    CrashAt,
    JournalKill,
    TrialResult,
    run_trial,
    trial_spec,
    version_commit_spec,
)

WAIT_TIMEOUT = 30.0  # real seconds the driver's waits may take (never reached when sound)
TRIALS = range(10)  # journal kills (even trials) and each crash point twice over (odd ones)


def _assert_sound(result: TrialResult) -> None:
    assert result.killed >= 1, f"no kill landed, the trial tested nothing:\n{result.report()}"
    assert result.ok, result.report()


def test_trials_cover_every_kind_of_kill_point() -> None:
    """The trials below kill before and after admin calls, during recovery, and at every
    named crash point: a change of :func:`trial_spec` must not quietly drop one."""
    kills = [k for t in TRIALS for k in trial_spec(t).kills]
    points = {k.point for k in kills if isinstance(k, CrashAt)}
    markers = {k.marker for k in kills if isinstance(k, JournalKill)}
    assert points == set(CRASH_POINTS)
    assert {"begin", "end"} <= markers
    assert any(len(trial_spec(t).kills) == 2 for t in TRIALS)


@pytest.mark.parametrize(
    "trial",
    TRIALS,
)
async def test_trial(trial: int, tmp_path: Path) -> None:
    result = await run_trial(trial_spec(trial), tmp_path, wait_timeout=WAIT_TIMEOUT)
    _assert_sound(result)


def _window_left(root: Path, work: Path, version: int) -> list[str]:
    """What issue 15's window leaves, read from the killed run's files: the version is
    stored, the distribute was acknowledged, yet no DP has a job for the version or holds
    it. Empty when the kill landed there; else what differs (the test did not test #15)."""
    db = root / SITE_SERVER / "site.db"
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
        ((pkg_id, stored),) = conn.execute("SELECT PkgID, StoredPkgVersion FROM SMSPackages")
        jobs = conn.execute("SELECT COUNT(*) FROM DistributionJobs").fetchone()[0]
    wrong = [] if stored == version else [f"stored version {stored}, not {version}"]
    wrong += [f"{jobs} DistributionJobs rows"] if jobs else []
    if "end 1 ok" not in journal_path(work).read_text(encoding="utf-8"):
        wrong.append("the distribute was not acknowledged")
    for dp in DPS:
        library = root / dp / ("DP" if dp == SITE_SERVER else "") / "SCCMContentLib"
        if (library / "DataLib" / f"{pkg_id}.{version}.json").exists():
            wrong.append(f"{dp} holds version {version} already")
    return wrong


@pytest.mark.parametrize(("scenario", "version"), [("first-distribution", 1), ("update", 2)])
async def test_kill_after_the_version_commit_before_the_dp_jobs(
    scenario: str, version: int, tmp_path: Path
) -> None:
    """Issue 15: DistMgr commits a new version and is killed before it creates the DP jobs.
    Reopened, with nothing re-issued but the wait, every DP reaches the stored version."""
    left: list[list[str]] = []
    result = await run_trial(
        version_commit_spec(scenario),
        tmp_path,
        wait_timeout=WAIT_TIMEOUT,
        after_kill=lambda _, root, work: left.append(_window_left(root, work, version)),
    )
    assert left == [[]], f"the kill missed issue 15's window: {left}\n{result.report()}"
    _assert_sound(result)
