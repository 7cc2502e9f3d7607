"""``python -m bench sitedb [--json] [--ops N] [--callers C] [--repeat R]``.

In one run, on the same machine and loop:
(a) cmdist: ``ops`` SMS Provider operations (create package) issued by ``callers``
    concurrent callers against one site database, timed from the first call until the
    last notification arrived as a bus message at a sink actor: provider validation, the
    single writer's group commit, the triggers (SMSPackages -> PkgNotification ->
    TableChangeNotifications), SMSDBMON reading, logging RCV/SND and sending, the bus;
(b) baseline: the same rows inserted into the same tables, with the same triggers, by
    aiosqlite ``executemany`` in batches of 1,000 (a transaction each), and the
    notification rows read back by RowID.
Each side is the best of ``repeat`` runs (the machine is noisy).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import aiosqlite
import anyio

from actors.config import load_hierarchy
from actors.site import SmsDbMon
from actors.site._provider import SmsProvider, _package_values
from actors.site.messages import PackageNotification
from actors.sitedb import SiteDatabase
from actors.sitedb.database import _connect_writer, _migrate
from actors.sitedb.schema import SMSPACKAGES_COLUMNS
from actors.status import PROVIDER, SMSDBMON, ComponentLogs
from bench._report import emit
from bus import Actor, Bus, handler, loop_name, run

ROOT = Path(__file__).resolve().parents[1]
BATCH = 1000
INSERT = (
    f"insert into SMSPackages ({', '.join(SMSPACKAGES_COLUMNS)})"
    f" values ({', '.join('?' * len(SMSPACKAGES_COLUMNS))})"
)


class Sink(Actor):
    """Stands in for DistMgr: counts the package notifications."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.finished = anyio.Event()

    @handler
    async def package(self, msg: PackageNotification) -> None:
        self.seen += 1
        if self.seen == self.count:
            self.finished.set()


async def _cmdist(folder: Path, ops: int, callers: int) -> tuple[float, int]:
    """Seconds from the first provider call to the last notification at the sink; commits."""
    hierarchy = load_hierarchy(ROOT / "hierarchy.toml", root=folder / "data")
    source = folder / "source"
    source.mkdir()
    (source / "file.txt").write_text("content")
    logs = ComponentLogs(folder / "logs")
    sink = Sink(ops)
    async with SiteDatabase.open(folder / "site.db", hierarchy=hierarchy) as db, Bus() as bus:
        provider = SmsProvider(db, hierarchy, "PS1", log=logs[PROVIDER])
        bus.spawn(sink, "PS1/DistMgr", mailbox_size=10_000)
        bus.spawn(SmsDbMon(db, site="PS1", log=logs[SMSDBMON]), "PS1/SMSDBMON")
        commits = db.commits
        per_caller = [ops // callers + (1 if i < ops % callers else 0) for i in range(callers)]

        async def caller(n: int) -> None:
            for i in range(n):
                await provider.create_package(f"Package {i}", source)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for n in per_caller:
                tg.start_soon(caller, n)
        await sink.finished.wait()
        elapsed = time.perf_counter() - start
        commits = db.commits - commits
        await bus.stop_actor("PS1/SMSDBMON")
    logs.close()
    return elapsed, commits


async def _baseline(folder: Path, ops: int) -> float:
    """Seconds to insert the same rows by executemany (batches of 1,000) and read back."""
    path = folder / "raw.db"
    conn = _connect_writer(path)
    _migrate(conn)
    conn.close()
    rows = [
        _package_values(f"PS1{i + 1:05X}", f"Package {i}", str(folder), "PS1", "", 2)
        for i in range(ops)
    ]
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("PRAGMA synchronous=NORMAL")
        start = time.perf_counter()
        for lo in range(0, ops, BATCH):
            await db.execute("BEGIN")
            await db.executemany(INSERT, rows[lo : lo + BATCH])
            await db.execute("COMMIT")
        last, seen = 0, 0
        while True:
            got = await db.execute_fetchall(
                "SELECT RowID, TableName, Operation, Rule, Key, Key2, Arg1, Arg2, Arg3, Arg4"
                " FROM TableChangeNotifications WHERE RowID > ? ORDER BY RowID LIMIT ?",
                (last, BATCH),
            )
            rows_read = list(got)
            if not rows_read:
                break
            seen += len(rows_read)
            last = rows_read[-1][0]
        elapsed = time.perf_counter() - start
    if seen != ops:
        raise RuntimeError(f"baseline read {seen} notifications, expected {ops}")
    return elapsed


async def _main(args: argparse.Namespace) -> tuple[float, float, int, str]:
    best_cmdist, best_raw, commits = float("inf"), float("inf"), 0
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="cmdist-bench-sitedb-") as tmp:
            elapsed, c = await _cmdist(Path(tmp), args.ops, args.callers)
            if elapsed < best_cmdist:
                best_cmdist, commits = elapsed, c
        with tempfile.TemporaryDirectory(prefix="cmdist-bench-sitedb-") as tmp:
            best_raw = min(best_raw, await _baseline(Path(tmp), args.ops))
    return best_cmdist, best_raw, commits, loop_name()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sitedb")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--callers", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    if args.ops < 1 or args.callers < 1 or args.repeat < 1:
        parser.error("--ops, --callers and --repeat must be >= 1")
    cmdist_s, raw_s, commits, loop = run(_main, args)
    notif_per_s = args.ops / cmdist_s
    raw_per_s = args.ops / raw_s
    result = {
        "ops": args.ops,
        "callers": args.callers,
        "loop": loop,
        "notif_per_s": round(notif_per_s, 1),
        "raw_insert_per_s": round(raw_per_s, 1),
        "ratio": round(notif_per_s / raw_per_s, 3),
        "commits": commits,
        "ops_per_commit": round(args.ops / max(commits, 1), 1),
    }
    emit(
        f"sitedb: {args.ops:,} provider operations from {args.callers} callers ({loop})",
        ["path", "seconds", "rows/s", "commits"],
        [
            ["provider > writer > triggers > SMSDBMON > bus", cmdist_s, notif_per_s, commits],
            ["executemany x1000 + read back (baseline)", raw_s, raw_per_s, -(-args.ops // BATCH)],
            ["ratio", notif_per_s / raw_per_s, "", ""],
        ],
        result,
        args.json,
    )
    return 0
