"""``python -m bench crash --kills N [--json]``: N crash-consistency trials.

Each trial runs the crash harness's driver (``tests/crash/driver.py``: a few dozen packages
created, distributed to PS1's four standard DPs, updated, removed, deleted), SIGKILLs it at
the point :func:`tests.crash.harness.trial_spec` draws from the trial number (a journal line
before or after an admin call, or a named crash point inside DistMgr or PkgXferMgr; about
half are killed again while recovering), lets a resumed run finish, and checks the data root
(every package where the plan says, byte-identical on its DPs, nothing left of deleted ones,
and ``cmdist check``). Reported: trials, kills that landed, failures with the trial number
that reproduces each and its kill points, and time; the baseline is one trial of the same
workload without a kill, so the ratio is what killing and recovering costs. A failing
trial's folder is kept and named. The exit code is 1 when any trial failed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._report import emit
from bus import run
from tests.crash.harness import (
    CrashAt,
    JournalKill,
    Kill,
    TrialResult,
    TrialSpec,
    run_trial,
    trial_spec,
)


def _kind(kill: Kill) -> str:
    """The row a trial counts in: its first kill's kind."""
    if isinstance(kill, CrashAt):
        return kill.point
    assert isinstance(kill, JournalKill)
    return f"journal {kill.marker}"


def _failure(result: TrialResult, folder: Path) -> dict[str, Any]:
    return {
        "trial": result.spec.trial,
        "kills": [k.describe() for k in result.spec.kills],
        "runs": result.runs,
        "problems": result.problems,
        "folder": str(folder),
    }


async def _trial(spec: TrialSpec, base: Path, wait_timeout: float) -> tuple[TrialResult, Path]:
    folder = Path(tempfile.mkdtemp(prefix=f"trial{spec.trial}-", dir=base))
    result = await run_trial(spec, folder, wait_timeout=wait_timeout)
    if result.ok:
        shutil.rmtree(folder, ignore_errors=True)
    return result, folder


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="cmdist-bench-crash-", dir=args.dir))
    baseline_spec = TrialSpec(-1, args.first, args.packages, ())
    baseline, _ = await _trial(baseline_spec, base, args.wait_timeout)
    rows: dict[str, Counter[str]] = {}
    failures: list[dict[str, Any]] = []
    checks: Counter[str] = Counter()
    times: list[float] = []
    t0 = time.perf_counter()
    for trial in range(args.first, args.first + args.kills):
        result, folder = await _trial(trial_spec(trial, args.packages), base, args.wait_timeout)
        row = rows.setdefault(_kind(result.spec.kills[0]), Counter())
        row.update(trials=1, kills=result.killed, failed=int(not result.ok))
        checks[result.check.split(":")[0]] += 1
        times.append(result.seconds)
        if not result.ok:
            failures.append(_failure(result, folder))
            print(result.report(), f"\n  data kept in {folder}", flush=True)
    elapsed = time.perf_counter() - t0
    if not failures:
        shutil.rmtree(base, ignore_errors=True)
    mean = elapsed / max(1, args.kills)
    return {
        "trials": args.kills,
        "kills": sum(r["kills"] for r in rows.values()),
        "failed": len(failures),
        "failures": failures,
        "seconds": round(elapsed, 1),
        "trial_s": round(mean, 2),
        "max_trial_s": round(max(times, default=0.0), 2),
        "baseline_s": round(baseline.seconds, 2),
        "baseline_ok": baseline.ok,
        "ratio": round(mean / baseline.seconds, 2) if baseline.seconds else None,
        "check": dict(checks),
        "packages": args.packages,
        "by_kill": {k: dict(v) for k, v in sorted(rows.items())},
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench crash")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--kills", type=int, default=20, help="trials to run (default 20)")
    parser.add_argument("--first", type=int, default=0, help="first trial number (default 0)")
    parser.add_argument("--packages", type=int, default=30, help="packages per trial")
    parser.add_argument("--wait-timeout", type=float, default=60.0, help="driver waits, s")
    parser.add_argument("--dir", default=None, help="where to put the trials' data")
    args = parser.parse_args(list(argv))
    if args.kills < 1 or args.packages < 1:
        parser.error("--kills and --packages must be >= 1")
    result = run(_main, args)
    rows = [(kind, c["trials"], c["kills"], c["failed"]) for kind, c in result["by_kill"].items()]
    rows.append(("all", result["trials"], result["kills"], result["failed"]))
    failed = ", ".join(f"{f['trial']} ({'; '.join(f['kills'])})" for f in result["failures"])
    title = (
        f"crash: {result['trials']} trials of {result['packages']} packages in"
        f" {result['seconds']} s ({result['trial_s']} s a trial, {result['ratio']}x the"
        f" {result['baseline_s']} s of a trial without a kill); cmdist check: {result['check']}"
        f"\nfailed trials: {failed or 'none'}"
    )
    emit(title, ["first kill", "trials", "kills", "failed"], rows, result, args.json)
    if not result["baseline_ok"]:
        print("the baseline trial (no kill) failed too", file=sys.stderr)
    return 1 if result["failures"] or not result["baseline_ok"] else 0
