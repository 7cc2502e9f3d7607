"""The crash harness's driver: a deterministic admin workload, run in its own process so the
harness can SIGKILL it anywhere and run it again with ``--resume``.

    python tests/crash/driver.py --root R --work W --seed S [--packages N] [--resume]

It opens the repository's hierarchy at data root ``R`` and runs the plan that ``--seed``
(and ``--scenario``) determine on small packages whose source trees live under ``W/src``:
create, distribute to some of PS1's four standard DPs, edit the source and update, remove
from a DP, delete, wait, interleaved across packages. Around each admin call it appends
``begin <step> <op> <args>`` and ``end <step> <result>`` to ``W/journal``, flushed and
fsynced, so that the harness picks kill points from the driver's own progress and a resumed
driver knows which calls were acknowledged.

``--resume`` runs the same plan from the first step without an ``end`` line. That step may
have taken effect before the kill or not; it is re-issued so that both cases end the same
(a create finds its package by name first, a distribute or remove tolerates the DP being
there or gone already, an update is simply issued again, a delete tolerates the package
being gone). The last step waits until every live package is final and every deleted one
is gone; the exit code is 0 only then. The plan and the trees are pure functions of the
arguments: the harness imports them to compute what the data root must hold at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import NamedTuple, TextIO

import anyio

from actors import Hierarchy
from actors.errors import (
    DuplicateDistribution,
    NotDistributed,
    UnknownPackage,
    WaitTimeout,
)
from bus import run

REPO = Path(__file__).resolve().parents[2]
HIERARCHY = REPO / "hierarchy.toml"
TIME_SCALE = 0.0001  # the 1800 s retry delay is 0.18 s of real time
SITE = "PS1"
SITE_SERVER = "PS1SITE.CONTOSO.COM"
DPS = ("PS1DP1.CONTOSO.COM", "PS1DP2.CONTOSO.COM", "PS1SYS.CONTOSO.COM", SITE_SERVER)
SCENARIOS = ("mixed", "first-distribution", "update")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_STUCK = 3  # a wait timed out, or a deleted package did not go
EXIT_ERROR = 4  # an admin call failed where the plan says it must succeed

KIB = 1024
_SHARED_BLOBS = 3


# -- the plan ------------------------------------------------------------------------------


class Step(NamedTuple):
    """One admin call of the plan (``finish``: wait for every package, the last step)."""

    number: int
    op: str  # create, distribute, update, remove, delete, wait, finish
    name: str = ""  # the package's name ("" for finish)
    dps: tuple[str, ...] = ()
    rev: int = 0  # create: 0; update: the source revision it publishes

    def args(self) -> str:
        """The step's arguments as the journal shows them."""
        parts = [self.name] if self.name else []
        if self.dps:
            parts.append(",".join(self.dps))
        if self.op in ("create", "update"):
            parts.append(f"r{self.rev}")
        return " ".join(parts)

    def describe(self) -> str:
        """``17 update Crash004 r1``: the step as its ``begin`` line names it."""
        return f"{self.number} {self.op} {self.args()}".rstrip()


class FinalState(NamedTuple):
    """What the plan leaves of one package: where it must be, at which source revision."""

    name: str
    deleted: bool
    targets: tuple[str, ...]  # DPs it is distributed to at the end
    removed: tuple[str, ...]  # DPs it was removed from (and not given back)
    rev: int


def package_name(i: int) -> str:
    return f"Crash{i:03d}"


def make_plan(seed: int, packages: int, scenario: str = "mixed") -> list[Step]:
    """The steps, in order: per-package sequences interleaved by a seeded draw, then finish."""
    if scenario == "first-distribution":
        sequences = [[("create", (), 0), ("distribute", DPS, 0)]]
    elif scenario == "update":
        sequences = [
            [("create", (), 0), ("distribute", DPS, 0), ("wait", (), 0), ("update", (), 1)]
        ]
    else:
        rng = random.Random(f"plan:{seed}")
        sequences = [_package_sequence(rng) for _ in range(packages)]
    ops = _interleave(random.Random(f"order:{seed}"), sequences)
    steps = [Step(i, op, package_name(p), dps, rev) for i, (p, (op, dps, rev)) in enumerate(ops)]
    return [*steps, Step(len(steps), "finish")]


_Op = tuple[str, tuple[str, ...], int]


def _package_sequence(rng: random.Random) -> list[_Op]:
    """One package's calls in their only sensible order: create, distribute, updates, more
    DPs, a removal, a delete; a wait now and then so some calls land on finished work."""
    seq: list[_Op] = [("create", (), 0)]
    targets: list[str] = []
    if rng.random() < 0.85:
        targets = rng.sample(DPS, rng.randint(1, 3))
        seq.append(("distribute", tuple(targets), 0))
    for rev in range(1, rng.choice((0, 1, 1, 2)) + 1):
        _maybe_wait(rng, seq)
        seq.append(("update", (), rev))
    others = [dp for dp in DPS if dp not in targets]
    if others and rng.random() < 0.4:
        more = rng.sample(others, rng.randint(1, len(others)))
        targets += more
        seq.append(("distribute", tuple(more), 0))
    _maybe_wait(rng, seq)
    if targets and rng.random() < 0.3:
        seq.append(("remove", (rng.choice(targets),), 0))
    if rng.random() < 0.2:
        _maybe_wait(rng, seq)
        seq.append(("delete", (), 0))
    return seq


def _maybe_wait(rng: random.Random, seq: list[_Op]) -> None:
    if rng.random() < 0.2:
        seq.append(("wait", (), 0))


def _interleave(rng: random.Random, sequences: list[list[_Op]]) -> list[tuple[int, _Op]]:
    cursors = [0] * len(sequences)
    active = [i for i, s in enumerate(sequences) if s]
    out: list[tuple[int, _Op]] = []
    while active:
        i = rng.choice(active)
        out.append((i, sequences[i][cursors[i]]))
        cursors[i] += 1
        if cursors[i] == len(sequences[i]):
            active.remove(i)
    return out


def final_states(plan: list[Step]) -> dict[str, FinalState]:
    """Every package the plan creates, as the plan leaves it."""
    out: dict[str, FinalState] = {}
    for step in plan:
        if step.op == "create":
            out[step.name] = FinalState(step.name, False, (), (), 0)
            continue
        state = out.get(step.name)
        if state is None:
            continue
        if step.op == "distribute":
            targets = (*state.targets, *step.dps)
            removed = tuple(dp for dp in state.removed if dp not in step.dps)
            state = state._replace(targets=targets, removed=removed)
        elif step.op == "remove":
            targets = tuple(dp for dp in state.targets if dp not in step.dps)
            state = state._replace(targets=targets, removed=(*state.removed, *step.dps))
        elif step.op == "update":
            state = state._replace(rev=step.rev)
        elif step.op == "delete":
            state = state._replace(deleted=True)
        out[step.name] = state
    return out


# -- source trees --------------------------------------------------------------------------


def source_dir(work: Path, name: str) -> Path:
    return work / "src" / name


def tree(seed: int, name: str, rev: int, scenario: str = "mixed") -> dict[str, bytes]:
    """The package's source files at a revision: a pure function, so a resumed driver and the
    harness rebuild exactly what the first run wrote. Every package carries one of a few
    shared blobs (single-instance storage); each revision edits a file, adds one, drops one
    or swaps the shared blob."""
    rng = random.Random(f"tree:{seed}:{name}")
    size = 4 * KIB * KIB if scenario != "mixed" else rng.randint(1 * KIB, 12 * KIB)
    files = {
        "bin/app.bin": rng.randbytes(size),
        "lib/common.dll": _shared_blob(seed, rng.randrange(_SHARED_BLOBS)),
    }
    for r in range(1, rev + 1):
        _edit(random.Random(f"edit:{seed}:{name}:{r}"), files, seed, r)
    files["setup.cmd"] = f"rem {name} revision {rev}\r\n".encode()
    return files


def _shared_blob(seed: int, k: int) -> bytes:
    return random.Random(f"shared:{seed}:{k}").randbytes(6 * KIB)


def _edit(rng: random.Random, files: dict[str, bytes], seed: int, rev: int) -> None:
    kind = rng.choice(("modify", "add", "drop", "shared"))
    extras = sorted(p for p in files if p.startswith("data/"))
    if kind == "add" or (kind == "drop" and not extras):
        files[f"data/r{rev}.txt"] = rng.randbytes(rng.randint(64, 4 * KIB))
    elif kind == "drop":
        del files[rng.choice(extras)]
    elif kind == "shared":
        files["lib/common.dll"] = _shared_blob(seed, rng.randrange(_SHARED_BLOBS))
    else:
        app = bytearray(files["bin/app.bin"])
        at = rng.randrange(len(app))
        app[at : at + 256] = rng.randbytes(256)
        files["bin/app.bin"] = bytes(app)


def write_tree(work: Path, root: Path, files: Mapping[str, bytes]) -> None:
    """Make ``root`` hold exactly ``files``. Each file is written beside the tree and renamed
    in, so a snapshot running meanwhile reads a file whole, old or new, never half; writing
    the same tree twice changes nothing (a resumed step rewrites it)."""
    scratch = work / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        path = root / rel
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = scratch / f"{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    for path in sorted(root.rglob("*"), reverse=True):  # files before their folders
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in files:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


# -- the journal ---------------------------------------------------------------------------


class JournalState(NamedTuple):
    """What a journal says: each acknowledged step's result, and the steps that began."""

    acked: dict[int, str]
    begun: set[int]
    package_ids: dict[str, str]  # package name -> ID, from acknowledged creates

    def first_open(self) -> int:
        """The first step without an ``end``: where a resumed driver goes on."""
        step = 0
        while step in self.acked:
            step += 1
        return step


def journal_path(work: Path) -> Path:
    return work / "journal"


def journal_lines(text: str) -> Iterator[str]:
    """Whole lines only: a line a kill cut short is not there."""
    lines = text.split("\n")
    yield from (line for line in lines[:-1] if line)


def read_journal(path: Path, plan: list[Step]) -> JournalState:
    acked: dict[int, str] = {}
    begun: set[int] = set()
    ids: dict[str, str] = {}
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    for line in journal_lines(text):
        word, _, rest = line.partition(" ")
        number, _, result = rest.partition(" ")
        if word == "begin":
            begun.add(int(number))
        elif word == "end":
            acked[int(number)] = result
            step = plan[int(number)]
            if step.op == "create":
                ids[step.name] = result.split()[1]
    return JournalState(acked, begun, ids)


class Journal:
    """Appends lines durably: each is flushed and fsynced before the driver goes on."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def write(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())


# -- running the plan ----------------------------------------------------------------------


class DriverError(Exception):
    """The run cannot end as the plan says: the message says which step and why."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _Run:
    """One driver process: the plan, the journal, the package IDs known so far."""

    def __init__(self, args: argparse.Namespace, journal: Journal, state: JournalState) -> None:
        self.seed: int = args.seed
        self.scenario: str = args.scenario
        self.work = Path(args.work)
        self.root = Path(args.root)
        self.site_db = self.root / SITE_SERVER / "site.db"
        self.timeout: float = args.wait_timeout
        self.plan = make_plan(args.seed, args.packages, args.scenario)
        self.journal = journal
        self.state = state
        self.ids = dict(state.package_ids)

    async def steps(self, h: Hierarchy) -> None:
        first = self.state.first_open()
        for step in self.plan[first:]:
            ambiguous = step.number in self.state.begun
            self._prepare(step)
            self.journal.write(f"begin {step.describe()}")
            result = await self._execute(h, step, ambiguous)
            self.journal.write(f"end {step.number} {result}")

    def _prepare(self, step: Step) -> None:
        if step.op in ("create", "update"):
            files = tree(self.seed, step.name, step.rev, self.scenario)
            write_tree(self.work, source_dir(self.work, step.name), files)

    async def _execute(self, h: Hierarchy, step: Step, ambiguous: bool) -> str:
        try:
            return await self._call(h, step, ambiguous)
        except (DuplicateDistribution, NotDistributed, UnknownPackage) as exc:
            if ambiguous and _tolerated(step.op, exc):
                return f"tolerated {type(exc).__name__}"
            raise DriverError(f"step {step.describe()}: {exc!r}", EXIT_ERROR) from exc
        except WaitTimeout as exc:
            raise DriverError(f"step {step.describe()}: {exc}", EXIT_STUCK) from exc

    async def _call(self, h: Hierarchy, step: Step, ambiguous: bool) -> str:
        if step.op == "create":
            return await self._create(h, step, ambiguous)
        if step.op == "finish":
            return await self._finish(h)
        pkg_id = self.ids[step.name]
        if step.op == "distribute":
            await h.distribute(pkg_id, list(step.dps))
        elif step.op == "update":
            await h.update(pkg_id)
        elif step.op == "remove":
            await h.remove(pkg_id, list(step.dps))
        elif step.op == "delete":
            await h.delete(pkg_id, timeout=self.timeout)
        elif step.op == "wait":
            await h.wait(pkg_id, timeout=self.timeout)
        return "ok"

    async def _create(self, h: Hierarchy, step: Step, ambiguous: bool) -> str:
        if ambiguous:
            found = await anyio.to_thread.run_sync(find_package, self.site_db, step.name)
            if found is not None:
                self.ids[step.name] = found
                return f"ok {found} found"
        pkg = await h.create_package(step.name, source_dir(self.work, step.name), site=SITE)
        self.ids[step.name] = pkg.pkg_id
        return f"ok {pkg.pkg_id}"

    async def _finish(self, h: Hierarchy) -> str:
        """Every live package final on its DPs, every deleted one gone (a delete whose wait
        a kill cut short was tolerated, not waited for)."""
        deadline = time.monotonic() + self.timeout
        for state in final_states(self.plan).values():
            pkg_id = self.ids[state.name]
            left = max(0.1, deadline - time.monotonic())
            if not state.deleted:
                await h.wait(pkg_id, timeout=left)
                continue
            try:
                await h.wait(pkg_id, timeout=left)
            except UnknownPackage:
                continue
            raise DriverError(f"deleted package {state.name} ({pkg_id}) is still there", EXIT_STUCK)
        return "ok"


def _tolerated(op: str, exc: Exception) -> bool:
    """The errors a re-issued call meets when its first issue took effect before the kill."""
    return (
        (op == "distribute" and isinstance(exc, DuplicateDistribution))
        or (op == "remove" and isinstance(exc, NotDistributed))
        or (op == "delete" and isinstance(exc, UnknownPackage))
    )


def find_package(site_db: Path, name: str) -> str | None:
    """The ID of the package named ``name``, read from the site database read-only: a create
    the kill left unacknowledged may have committed; re-creating it would make a second one."""
    uri = f"{site_db.as_uri()}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        rows = conn.execute("SELECT PkgID FROM SMSPackages WHERE Name = ?", (name,)).fetchall()
    if len(rows) > 1:
        raise DriverError(f"{len(rows)} packages are named {name}: {rows}", EXIT_ERROR)
    return str(rows[0][0]) if rows else None


async def _main(run_: _Run) -> None:
    async with Hierarchy.open(HIERARCHY, root=run_.root, time_scale=TIME_SCALE) as h:
        run_.journal.write("opened")
        await run_.steps(h)
    run_.journal.write("done")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tests/crash/driver.py", description=__doc__)
    parser.add_argument("--root", required=True, help="the data root")
    parser.add_argument("--work", required=True, help="source trees and the journal")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--packages", type=int, default=30)
    parser.add_argument("--scenario", choices=SCENARIOS, default="mixed")
    parser.add_argument("--resume", action="store_true", help="go on from the journal")
    parser.add_argument("--wait-timeout", type=float, default=120.0, help="seconds")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = journal_path(work)
    if path.exists() and path.stat().st_size and not args.resume:
        print(f"{path} is not empty: give --resume to go on", file=sys.stderr)
        return EXIT_USAGE
    state = read_journal(path, make_plan(args.seed, args.packages, args.scenario))
    with open(path, "a", encoding="utf-8") as file:
        journal = Journal(file)
        journal.write(f"start {os.getpid()}{' resume' if args.resume else ''}")
        try:
            run(_main, _Run(args, journal, state))
        except Exception as exc:
            return _failed(exc)
    return EXIT_OK


def _failed(exc: Exception) -> int:
    """Print why the run failed; the exit code says how. A DriverError inside an exception
    group (a facade that wraps what the caller raised) counts as itself."""
    found = exc
    while isinstance(found, ExceptionGroup) and len(found.exceptions) == 1:
        found = found.exceptions[0]
    if isinstance(found, DriverError):
        print(f"driver: {found}", file=sys.stderr)
        return found.code
    traceback.print_exception(exc)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
