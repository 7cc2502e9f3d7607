"""The crash harness: run the driver, SIGKILL it at a chosen point, run it again with
``--resume`` (killed again, sometimes, during its recovery), let a last run finish, then
check that the data root holds exactly what the plan says, as DESIGN.md's reliability rules
require ("after a kill and a restart, every package ends where it would have, with no lost,
duplicated or corrupt content").

Kill points are of two kinds. From the journal: the harness watches the driver's journal
and kills it right after (or a short delay after) a chosen line: ``begin k``/``end k`` of a
step, or ``start``/``opened`` of a resumed run (a kill during recovery). Inside the product:
``CMDIST_CRASH_AT=name:N`` makes the driver kill itself the Nth time it reaches a named
crash point (``actors/_crashpoints.py``), in the windows between one commit and the next
where a journal kill would land only by luck. :func:`trial_spec` draws both from the trial
number, so a failing trial is reproduced by its number alone.

The checks, after a clean finish: every live package is Installed on every DP it targets
at its stored version, and ``extract`` from each gives back its final source tree byte for
byte; a DP it was removed from (or never given) holds none of it; a deleted package has no
row left in the site database and no content in any library; no job is left; no package
exists that the plan did not create; and ``cmdist check --root R --json`` reports no problem.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc

from actors import Hierarchy
from actors._crashpoints import CRASH_AT_ENV
from actors.config import HierarchyConfig, load_hierarchy
from actors.dp import dp_root
from tests.crash.driver import (
    DPS,
    HIERARCHY,
    REPO,
    SITE_SERVER,
    TIME_SCALE,
    FinalState,
    Step,
    final_states,
    journal_lines,
    journal_path,
    make_plan,
    read_journal,
    tree,
)

DRIVER = Path(__file__).with_name("driver.py")
CRASH_POINTS = (
    "distmgr.version_committed",
    "distmgr.job_created",
    "distmgr.status_stored",
    "pkgxfermgr.file_sent",
    "pkgxfermgr.content_added",
    "pkgxfermgr.status_dropped",
)
POLL = 0.002  # seconds between looks at the journal and the driver's exit
RUN_TIMEOUT = 240.0  # real seconds one driver run may take before the trial fails
CHECK_TIMEOUT = 120.0
LOG_TAIL = 20  # lines of a failed run's output in its problem
# ``cmdist`` as its console script runs it (``python -m actors.cli._main`` has no ``__main__``)
CMDIST = "import sys; from actors.cli._main import main; sys.exit(main())"


def python() -> str:
    """The repository's venv interpreter when there is one (the driver needs its packages)."""
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


# -- kill points ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalKill:
    """Kill after the first journal line this run writes that starts with the marker.

    ``marker`` is ``begin``, ``end``, ``start`` or ``opened``; for ``begin``/``end`` the step
    is ``step``, or (``relative``) the run's first open step plus ``step``."""

    marker: str
    step: int = 0
    relative: bool = False
    delay: float = 0.0

    def prefix(self, first_open: int, last_step: int) -> str:
        if self.marker not in ("begin", "end"):
            return self.marker
        step = min(first_open + self.step, last_step) if self.relative else self.step
        return f"{self.marker} {step} "

    def describe(self) -> str:
        where = self.marker
        if self.marker in ("begin", "end"):
            where += f" first+{self.step}" if self.relative else f" {self.step}"
        return where + (f" +{self.delay:g}s" if self.delay else "")


@dataclass(frozen=True)
class CrashAt:
    """The driver kills itself the ``nth`` time it reaches the named crash point."""

    point: str
    nth: int = 1

    def describe(self) -> str:
        return f"{CRASH_AT_ENV}={self.point}:{self.nth}"


Kill = JournalKill | CrashAt


@dataclass(frozen=True)
class TrialSpec:
    """One trial: the workload and the kill of each run but the last (which finishes)."""

    trial: int
    seed: int
    packages: int
    kills: tuple[Kill, ...]
    scenario: str = "mixed"

    def describe(self) -> str:
        kills = "; ".join(k.describe() for k in self.kills)
        what = f"seed {self.seed}, {self.packages} packages, {self.scenario}"
        return f"trial {self.trial} ({what}): {kills}"


def trial_spec(trial: int, packages: int = 12) -> TrialSpec:
    """The trial's kills, drawn from its number: even trials kill from the journal, odd ones
    at a crash point (each point in turn); about half are killed again while recovering."""
    rng = random.Random(f"trial:{trial}")
    steps = len(make_plan(trial, packages))
    first: Kill
    if trial % 2 == 0:
        marker = rng.choice(("begin", "end"))
        first = JournalKill(marker, rng.randrange(steps), delay=rng.choice((0, 0, 0.005, 0.05)))
    else:
        first = CrashAt(CRASH_POINTS[(trial // 2) % len(CRASH_POINTS)], rng.randint(1, 10))
    kills: list[Kill] = [first]
    if rng.random() < 0.5:
        kills.append(_recovery_kill(rng))
    return TrialSpec(trial, trial, packages, tuple(kills))


def version_commit_spec(scenario: str) -> TrialSpec:
    """Issue 15's cases: a kill right after DistMgr commits a new version, before it creates
    the DP jobs, on a first distribution (the package's first commit, with its four DPs
    asked for while the 4 MiB snapshot runs) or on an update (the second commit, after the
    first version is Installed everywhere)."""
    nth = {"first-distribution": 1, "update": 2}[scenario]
    return TrialSpec(15, 15, 1, (CrashAt("distmgr.version_committed", nth),), scenario)


def _recovery_kill(rng: random.Random) -> Kill:
    """A kill of a resumed run: while it opens, right after, at a crash point it reaches
    finishing what the first run left, or at one of its first steps."""
    kind = rng.randrange(4)
    if kind == 0:
        return JournalKill("start", delay=round(rng.uniform(0.0, 0.3), 2))  # while it opens
    if kind == 1:
        return JournalKill("opened", delay=rng.choice((0, 0.01, 0.05)))
    if kind == 2:
        return CrashAt(rng.choice(CRASH_POINTS), rng.randint(1, 3))
    return JournalKill(rng.choice(("begin", "end")), rng.randint(0, 4), relative=True)


# -- running the driver --------------------------------------------------------------------


@dataclass
class TrialResult:
    """What a trial did and found: enough, with its spec, to tell a failure from a kill that
    never landed and to reproduce it."""

    spec: TrialSpec
    runs: list[str] = field(default_factory=list)  # what happened to each driver run
    problems: list[str] = field(default_factory=list)
    killed: int = 0  # runs that were killed (a kill point the run never reached is none)
    check: str = "not run"
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        lines = [self.spec.describe(), *(f"  {r}" for r in self.runs), f"  check: {self.check}"]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


class TrialFailed(Exception):
    """The trial cannot go on (a driver run failed or hung): the message says which."""


@dataclass
class _Paths:
    work: Path
    root: Path

    @property
    def journal(self) -> Path:
        return journal_path(self.work)


AfterKill = Callable[[int, Path, Path], None]
"""Called after each killed run with its number, the data root and the work folder: a test
looks at what the kill left before the next run repairs it."""


async def run_trial(
    spec: TrialSpec,
    base: Path,
    *,
    wait_timeout: float = 60.0,
    after_kill: AfterKill | None = None,
) -> TrialResult:
    """Run the trial's driver runs in ``base`` (a fresh folder), then verify the data root."""
    t0 = time.monotonic()
    paths = _Paths(base / "work", base / "data")
    result = TrialResult(spec)
    plan = make_plan(spec.seed, spec.packages, spec.scenario)
    try:
        await _run_all(spec, paths, plan, result, wait_timeout, after_kill)
    except TrialFailed as exc:
        result.problems.append(str(exc))  # and verify what it left: the symptoms
    try:
        await verify(spec, paths, plan, result)
    except TrialFailed as exc:
        result.problems.append(str(exc))
    result.seconds = time.monotonic() - t0
    return result


async def _run_all(
    spec: TrialSpec,
    paths: _Paths,
    plan: list[Step],
    result: TrialResult,
    wait_timeout: float,
    after_kill: AfterKill | None,
) -> None:
    """Each kill in turn, then one run without a kill, which must finish."""
    kills: list[Kill | None] = [*spec.kills, None]
    for number, kill in enumerate(kills, start=1):
        killed = await _run_once(spec, paths, plan, kill, number, result, wait_timeout)
        if not killed:
            return
        result.killed += 1
        if after_kill is not None:
            after_kill(number, paths.root, paths.work)


async def _run_once(
    spec: TrialSpec,
    paths: _Paths,
    plan: list[Step],
    kill: Kill | None,
    number: int,
    result: TrialResult,
    wait_timeout: float,
) -> bool:
    """One driver run; True when it was killed (by the harness or its crash point)."""
    resume = number > 1
    first_open = read_journal(paths.journal, plan).first_open()
    args = [
        *(python(), str(DRIVER), "--root", str(paths.root), "--work", str(paths.work)),
        *("--seed", str(spec.seed), "--packages", str(spec.packages)),
        *("--scenario", spec.scenario, "--wait-timeout", str(wait_timeout)),
        *(["--resume"] if resume else []),
    ]
    env = {k: v for k, v in os.environ.items() if k != CRASH_AT_ENV}
    if isinstance(kill, CrashAt):
        env[CRASH_AT_ENV] = f"{kill.point}:{kill.nth}"
    paths.work.mkdir(parents=True, exist_ok=True)
    offset = paths.journal.stat().st_size if paths.journal.exists() else 0
    log = paths.work / f"run{number}.log"
    async with await anyio.open_file(log, "wb") as out:
        output = out.wrapped
        process = await anyio.open_process(args, cwd=REPO, env=env, stdout=output, stderr=output)
        watch = kill.prefix(first_open, len(plan) - 1) if isinstance(kill, JournalKill) else None
        delay = kill.delay if isinstance(kill, JournalKill) else 0.0
        seen = await _supervise(process, paths.journal, offset, watch, delay, number)
    code = process.returncode
    what = f"run {number}{' (resume)' if resume else ''}: "
    what += kill.describe() if kill is not None else "no kill"
    if seen is not None:
        result.runs.append(f"{what} -> killed after {seen!r}")
        return True
    if isinstance(kill, CrashAt) and code == -9:
        result.runs.append(f"{what} -> crash point fired")
        return True
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL:]
        raise TrialFailed(f"{what}: the driver exited {code}:\n" + "\n".join(tail))
    result.runs.append(f"{what} -> finished" + (" (kill point not reached)" if kill else ""))
    return False


async def _supervise(
    process: anyio.abc.Process,
    journal: Path,
    offset: int,
    watch: str | None,
    delay: float,
    number: int,
) -> str | None:
    """Wait for the driver to exit, killing it once the watched line appears; returns that
    line if the harness killed it."""
    seen: str | None = None
    with anyio.move_on_after(RUN_TIMEOUT) as scope:
        while _running(process):
            if watch is not None and seen is None:
                seen = _find_line(journal, offset, watch)
                if seen is not None:
                    await anyio.sleep(delay)
                    if not _running(process):
                        return None  # it exited first
                    process.kill()
            await anyio.sleep(POLL)
        await process.wait()
    if scope.cancelled_caught:
        process.kill()
        await process.wait()
        raise TrialFailed(f"run {number}: the driver did not exit within {RUN_TIMEOUT:g} s")
    return seen


def _running(process: anyio.abc.Process) -> bool:
    return process.returncode is None


def _find_line(journal: Path, offset: int, prefix: str) -> str | None:
    """The first whole line written after ``offset`` that starts with ``prefix``."""
    try:
        with open(journal, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    return next((line for line in journal_lines(text) if line.startswith(prefix)), None)


# -- verification --------------------------------------------------------------------------


async def verify(spec: TrialSpec, paths: _Paths, plan: list[Step], result: TrialResult) -> None:
    """Every check of the module docstring; each problem is recorded, none stops the rest."""
    ids = read_journal(paths.journal, plan).package_ids
    finals = final_states(plan)
    missing = sorted(set(finals) - set(ids))
    if missing:
        names = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise TrialFailed(f"nothing to verify: no package ID for {len(missing)} ({names})")
    config = load_hierarchy(HIERARCHY, root=paths.root)
    result.check = await run_check(paths.root, result.problems)
    result.problems += _check_database(paths.root, finals, ids)
    result.problems += _check_libraries(config, finals, ids)
    sql = "SELECT PkgID, StoredPkgVersion FROM SMSPackages"
    stored = {str(pkg_id): int(str(v)) for pkg_id, v in _site_rows(paths.root, sql)}
    live = [state for state in finals.values() if not state.deleted]
    async with Hierarchy.open(HIERARCHY, root=paths.root, time_scale=TIME_SCALE) as h:
        for state in live:
            pkg_id = ids[state.name]
            version = stored.get(pkg_id)
            if version is None:
                result.problems.append(f"{state.name} ({pkg_id}) is not in the site database")
                continue
            source = tree(spec.seed, state.name, state.rev, spec.scenario)
            out = Path(tempfile.mkdtemp(prefix="extract-", dir=paths.work)) / state.name
            result.problems += await _check_live(h, state, pkg_id, version, source, out)
            result.problems += _check_versions(config, state, pkg_id, version)


def _site_rows(root: Path, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
    db = root / SITE_SERVER / "site.db"
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
        return [tuple(r) for r in conn.execute(sql, tuple(args)).fetchall()]


_PACKAGE_TABLES = (
    ("SMSPackages", "PkgID"),
    ("PkgServers", "PkgID"),
    ("PkgStatus", "ID"),
    ("DistributionJobs", "PkgID"),
)


def _check_database(root: Path, finals: dict[str, FinalState], ids: dict[str, str]) -> list[str]:
    """Deleted packages have no row left; no job is left; no package the plan did not make."""
    problems = []
    for state in finals.values():
        if not state.deleted:
            continue
        for table, column in _PACKAGE_TABLES:
            sql = f"SELECT COUNT(*) FROM {table} WHERE {column} = ?"
            (count,) = _site_rows(root, sql, (ids[state.name],))[0]
            if count:
                problems.append(f"deleted {state.name} ({ids[state.name]}): {count} {table} rows")
    jobs = _site_rows(root, "SELECT PkgID, DPID, PackageVersion, State FROM DistributionJobs")
    if jobs:
        problems.append(f"DistributionJobs rows left after the finish: {jobs}")
    known = set(ids.values())
    for pkg_id, name in _site_rows(root, "SELECT PkgID, Name FROM SMSPackages"):
        if pkg_id not in known:
            problems.append(f"package {pkg_id} ({name}) exists but the plan made no such package")
    return problems


def _check_libraries(
    config: HierarchyConfig, finals: dict[str, FinalState], ids: dict[str, str]
) -> list[str]:
    """On disk: a DP the package does not target holds none of it; a deleted package is in no
    library, the site's own included."""
    problems = []
    site_library = config.server_root(SITE_SERVER) / "SCCMContentLib"
    for state in finals.values():
        pkg_id = ids[state.name]
        libraries = {dp: _dp_library(config, dp) for dp in DPS if dp not in state.targets}
        if state.deleted:
            libraries["the site's library"] = site_library
        for where, library in libraries.items():
            held = _held(library, pkg_id)
            if held:
                why = _why(state, where)
                problems.append(f"{state.name} ({pkg_id}, {why}) is on {where}: {held}")
    return problems


def _why(state: FinalState, where: str) -> str:
    """Why a package must not be in a library: for the failure message."""
    if state.deleted:
        return "deleted"
    return "removed from it" if where in state.removed else "never distributed to it"


def _dp_library(config: HierarchyConfig, dp: str) -> Path:
    return dp_root(config, dp, dp == SITE_SERVER) / "SCCMContentLib"


def _held(library: Path, pkg_id: str) -> list[str]:
    """What a content library holds of a package: its manifests and its PkgLib entry."""
    held = sorted(p.name for p in (library / "DataLib").glob(f"{pkg_id}.*.json"))
    if (library / "PkgLib" / f"{pkg_id}.json").exists():
        held.append(f"PkgLib/{pkg_id}.json")
    return held


async def _check_live(
    h: Hierarchy,
    state: FinalState,
    pkg_id: str,
    stored: int,
    source: dict[str, bytes],
    out: Path,
) -> list[str]:
    """Installed at the stored version on every targeted DP, extracts identical to the source,
    and a DP it was removed from reported Removed (if reported at all)."""
    name = f"{state.name} ({pkg_id})"
    status = {s.dp: s for s in await h.content_status(pkg_id)}
    problems = []
    for dp in state.targets:
        s = status.get(dp)
        if s is None or s.state != "Installed" or s.version != stored:
            seen = "no status" if s is None else f"{s.state} v{s.version} ({s.detail})"
            problems.append(f"{name} on {dp}: want Installed v{stored}, found {seen}")
            continue
        problems += await _check_extract(h, name, pkg_id, dp, source, out / dp)
    for dp in state.removed:
        s = status.get(dp)
        if s is not None and s.state != "Removed":
            problems.append(f"{name} was removed from {dp}, which reports {s.state} v{s.version}")
    return problems


def _check_versions(
    config: HierarchyConfig, state: FinalState, pkg_id: str, stored: int
) -> list[str]:
    """A targeted DP keeps the stored version only: adding a version drops the older ones,
    so one left behind is content a kill orphaned."""
    want = [f"{pkg_id}.{stored}.json", f"PkgLib/{pkg_id}.json"]
    problems = []
    for dp in state.targets:
        held = _held(_dp_library(config, dp), pkg_id)
        if held != want:
            problems.append(f"{state.name} ({pkg_id}) on {dp}: the library holds {held}")
    return problems


async def _check_extract(
    h: Hierarchy, name: str, pkg_id: str, dp: str, source: dict[str, bytes], out: Path
) -> list[str]:
    try:
        await h.extract(pkg_id, dp, out)
    except Exception as exc:
        return [f"{name}: extract from {dp} failed: {exc!r}"]
    got = await anyio.to_thread.run_sync(_read_tree, out)
    if sorted(got) != sorted(source):
        return [f"{name} on {dp}: files {sorted(got)}, the source has {sorted(source)}"]
    differ = sorted(rel for rel, data in source.items() if got[rel] != data)
    return [f"{name} on {dp}: {differ} differ from the source"] if differ else []


def _read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# -- cmdist check --------------------------------------------------------------------------


async def run_check(root: Path, problems: list[str]) -> str:
    """``cmdist check --root R --json``: its problems join the trial's. Returns a one-line
    summary; "skipped: ..." when this tree has no ``check`` command yet."""
    args = [python(), "-c", CMDIST, "check", "--root", str(root), "--json"]
    with anyio.fail_after(CHECK_TIMEOUT):
        done = await anyio.run_process(args, cwd=REPO, check=False)
    stdout = done.stdout.decode(errors="replace").strip()
    stderr = done.stderr.decode(errors="replace").strip()
    if "invalid choice" in stderr:
        return "skipped: this tree's cmdist has no check command yet"
    try:
        report = json.loads(stdout.splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        problems.append(f"cmdist check exited {done.returncode} without JSON: {stderr[-2000:]}")
        return "error"
    found = [_problem(p) for p in report.get("problems", [])]
    if done.returncode != 0 or not report.get("ok") or found:
        problems += [f"cmdist check (exit {done.returncode}): {p}" for p in found or [stdout]]
        return "problems"
    return "ok"


def _problem(problem: object) -> str:
    """One of ``cmdist check``'s problems as a line: where, what, detail."""
    if isinstance(problem, dict):
        return ": ".join(str(problem[k]) for k in ("where", "what", "detail") if k in problem)
    return str(problem)
