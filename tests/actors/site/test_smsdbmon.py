"""SMSDBMON: routing, RCV/SND lines, order and exactly-once across kills and restarts."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from actors.config import load_hierarchy
from actors.site import SmsDbMon, SmsProvider
from actors.site.messages import (
    DistributionJobNotification,
    PackageNotification,
    PullResponseNotification,
)
from actors.sitedb import JobAction, SiteDatabase, ops
from actors.status import SMSDBMON, ComponentLogs
from bus import Actor, Bus, ManualClock, handler

ROOT = Path(__file__).resolve().parents[3]
BURST = 10_000


class Sink(Actor):
    """Stands in for DistMgr / PkgXferMgr: records what arrives, fires at a count."""

    def __init__(self, got: list[object], at: dict[int, anyio.Event] | None = None) -> None:
        self.got = got
        self.at = at or {}

    def _record(self, msg: object) -> None:
        self.got.append(msg)
        event = self.at.get(len(self.got))
        if event is not None:
            event.set()

    @handler
    async def package(self, msg: PackageNotification) -> None:
        self._record(msg)

    @handler
    async def job(self, msg: DistributionJobNotification) -> None:
        self._record(msg)

    @handler
    async def pull(self, msg: PullResponseNotification) -> None:
        self._record(msg)


class FailingOnce(SmsDbMon):
    """Crashes once when about to deliver a given notification (the actor restarts)."""

    def __init__(self, *args: object, crash_at: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.crash_at = crash_at

    async def _deliver(self, n: object, lines: list[str]) -> bool:
        if self.delivered + 1 == self.crash_at:
            self.crash_at = -1
            raise RuntimeError("injected crash")
        return await super()._deliver(n, lines)  # type: ignore[arg-type]


def _pkg_ids(got: list[object]) -> list[str]:
    return [m.pkg_id for m in got if isinstance(m, PackageNotification)]


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def _burst(db: SiteDatabase, start: int, count: int, per_commit: int = 500) -> None:
    for lo in range(start, start + count, per_commit):
        rows = [(f"PS1{i:05X}", 2, 1, "t") for i in range(lo, min(lo + per_commit, start + count))]
        await db.executemany(
            "INSERT INTO PkgNotification (PkgID, Priority, Type, TimeKey) VALUES (?, ?, ?, ?)",
            rows,
        )


async def test_routes_each_rule_and_logs_rcv_snd(tmp_path: Path) -> None:
    h = load_hierarchy(ROOT / "hierarchy.toml", root=tmp_path / "data")
    src = tmp_path / "src"
    src.mkdir()
    distmgr: list[object] = []
    pkgxfer: list[object] = []
    done = {3: anyio.Event()}
    logs = ComponentLogs(tmp_path / "logs")
    async with SiteDatabase.open(tmp_path / "site.db", hierarchy=h) as db:
        provider = SmsProvider(db, h, "PS1")
        async with Bus() as bus:
            bus.spawn(Sink(distmgr, done), "PS1/DistMgr")
            bus.spawn(Sink(pkgxfer), "PS1/PkgXferMgr")
            bus.spawn(
                SmsDbMon(db, site="PS1", server_root=tmp_path / "PS1SITE", log=logs[SMSDBMON]),
                "PS1/SMSDBMON",
            )
            pkg = await provider.create_package("Dummy1", src)
            await provider.add_distribution_points(pkg, ["PS1DP1.CONTOSO.COM"])
            dp = await db.distribution_point("PS1DP1.CONTOSO.COM")
            assert dp is not None
            job = await db.write(
                partial(
                    ops.insert_distribution_job,
                    dp=dp,
                    pkg_id=pkg,
                    package_version=1,
                    action=JobAction.ADD_OR_UPDATE,
                    now=dt.datetime.now(dt.UTC),
                )
            )
            await db.execute(
                "INSERT INTO PullDPResponse (PkgStatusID, MessageTime, PkgVersion, ActionState)"
                " VALUES (72057594037928008, '2019-01-07T20:06:18', 3, 1)"
            )
            with anyio.fail_after(10):
                await done[3].wait()
            while len(pkgxfer) < 1:
                await anyio.lowlevel.checkpoint()
            await bus.stop_actor("PS1/SMSDBMON")
    logs.close()
    n1, n2, n3, n4 = 1, 2, 3, 4  # RowIDs of a fresh database, in commit order
    assert distmgr == [
        PackageNotification(n1, pkg, 2, 2, 1),
        PackageNotification(n2, pkg, 4, 2, 2),
        PullResponseNotification(n4, 72057594037928008, "2019-01-07T20:06:18", 3, 1, "INSERT"),
    ]
    assert pkgxfer == [DistributionJobNotification(n3, job, pkg, dp.dp_id, 1, 1)]
    lines = re.findall(r"<!\[LOG\[(.*?)\]LOG\]!>", (tmp_path / "logs" / "smsdbmon.log").read_text())
    box = tmp_path / "PS1SITE" / "inboxes"
    assert lines == [
        f"RCV: INSERT on PkgNotification for PkgNotify_Add [{pkg}][{n1}]",
        f"SND: Dropped {box / 'distmgr.box' / f'{pkg}.PKN'} [{n1}]",
        f"RCV: INSERT on PkgNotification for PkgNotify_Add [{pkg}][{n2}]",
        f"SND: Dropped {box / 'distmgr.box' / f'{pkg}.PKN'} [{n2}]",
        f"RCV: UPDATE on DistributionJobs for DistributionJob_Creation [{pkg}][{n3}]",
        f"SND: Dropped {box / 'PkgTransferMgr.box' / f'{pkg}.PKN'} [{n3}]",
        f"RCV: INSERT on PullDPResponse for PullDPResponse_UpdIns [72057594037928008][{n4}]",
        f"SND: Dropped {box / 'distmgr.box' / 'incoming' / '72057594037928008.PUL'} [{n4}]",
    ]
    # delivered rows are gone and the position is saved, in the database
    assert _rows(tmp_path / "site.db", "SELECT COUNT(*) FROM TableChangeNotifications") == [(0,)]
    assert _rows(tmp_path / "site.db", "SELECT LastRowID FROM SmsDbMonPosition") == [(n4,)]


Spawn = Callable[[SiteDatabase], SmsDbMon]


@pytest.mark.parametrize(
    ("make", "restarts"),
    [
        pytest.param(
            lambda db: SmsDbMon(db, site="PS1", batch_size=97), 0, id="stop-and-new-instance"
        ),
        pytest.param(
            lambda db: FailingOnce(db, site="PS1", batch_size=97, crash_at=1234),
            1,
            id="crash-and-restart-then-stop",
        ),
    ],
)
async def test_exactly_once_in_order_across_a_kill_mid_burst(
    tmp_path: Path, make: Spawn, restarts: int
) -> None:
    """Kill SMSDBMON while a 10,000-notification burst is still being written and delivered
    into a small (full, blocking) mailbox; a new instance finishes the job."""
    got: list[object] = []
    at = {3000: anyio.Event(), BURST: anyio.Event()}
    async with (
        SiteDatabase.open(tmp_path / "site.db") as db,
        Bus() as bus,
        anyio.create_task_group() as tg,
    ):
        bus.spawn(Sink(got, at), "PS1/DistMgr", mailbox_size=16)
        bus.spawn(make(db), "PS1/SMSDBMON")
        tg.start_soon(_burst, db, 0, BURST)
        with anyio.fail_after(30):
            await at[3000].wait()
            assert bus.counters("PS1/SMSDBMON").restarts == restarts
            await bus.stop_actor("PS1/SMSDBMON")  # the kill: mid-burst, mid-send
            killed_at = len(got)
            bus.spawn(SmsDbMon(db, site="PS1", batch_size=97), "PS1/SMSDBMON")
            await at[BURST].wait()
        await bus.stop_actor("PS1/SMSDBMON")
    assert 3000 <= killed_at < BURST
    assert _pkg_ids(got) == [f"PS1{i:05X}" for i in range(BURST)]
    ids = [m.notification_id for m in got]  # type: ignore[attr-defined]
    assert ids == sorted(set(ids))


async def test_exactly_once_across_a_full_restart_of_bus_and_database(tmp_path: Path) -> None:
    got: list[object] = []
    path = tmp_path / "site.db"
    first = {2500: anyio.Event()}
    async with SiteDatabase.open(path) as db:
        await _burst(db, 0, BURST // 2)
        async with Bus() as bus:
            bus.spawn(Sink(got, first), "PS1/DistMgr", mailbox_size=8)
            bus.spawn(SmsDbMon(db, site="PS1", batch_size=256), "PS1/SMSDBMON")
            with anyio.fail_after(30):
                await first[2500].wait()
            await bus.stop_actor("PS1/SMSDBMON")
    assert len(got) < BURST // 2 + 1
    rest = {BURST: anyio.Event()}
    async with SiteDatabase.open(path) as db:
        await _burst(db, BURST // 2, BURST // 2)
        async with Bus() as bus:
            bus.spawn(Sink(got, rest), "PS1/DistMgr")
            bus.spawn(SmsDbMon(db, site="PS1"), "PS1/SMSDBMON")
            with anyio.fail_after(30):
                await rest[BURST].wait()
            await bus.stop_actor("PS1/SMSDBMON")
    assert _pkg_ids(got) == [f"PS1{i:05X}" for i in range(BURST)]


async def test_safety_poll_finds_rows_written_behind_the_writers_back(tmp_path: Path) -> None:
    """A row committed by another connection (no commit callback) is found by the clock poll."""
    path = tmp_path / "site.db"
    got: list[object] = []
    arrived = {1: anyio.Event()}
    clock = ManualClock()
    async with SiteDatabase.open(path) as db, Bus(clock=clock) as bus:
        bus.spawn(Sink(got, arrived), "PS1/DistMgr")
        mon = bus.spawn(SmsDbMon(db, site="PS1", poll_interval=60.0), "PS1/SMSDBMON")
        await anyio.wait_all_tasks_blocked()
        with sqlite3.connect(path) as other:
            other.execute(
                "INSERT INTO PkgNotification (PkgID, Priority, Type, TimeKey)"
                " VALUES ('PS100042', 2, 1, 't')"
            )
        await anyio.wait_all_tasks_blocked()
        assert got == []  # nobody told it yet
        await clock.advance(60.0)
        with anyio.fail_after(10):
            await arrived[1].wait()
        assert mon.position == got[0].notification_id  # type: ignore[attr-defined]
        await bus.stop_actor("PS1/SMSDBMON")
    assert _pkg_ids(got) == ["PS100042"]


async def test_waits_for_a_destination_that_is_not_running_yet(tmp_path: Path) -> None:
    got: list[object] = []
    arrived = {2: anyio.Event()}
    async with SiteDatabase.open(tmp_path / "site.db") as db, Bus() as bus:
        bus.spawn(SmsDbMon(db, site="PS1"), "PS1/SMSDBMON")
        await _burst(db, 0, 2)
        await anyio.wait_all_tasks_blocked()
        bus.spawn(Sink(got, arrived), "PS1/DistMgr")
        await _burst(db, 2, 1)  # any commit wakes it up
        with anyio.fail_after(10):
            await arrived[2].wait()
        while len(got) < 3:
            await anyio.lowlevel.checkpoint()
        await bus.stop_actor("PS1/SMSDBMON")
    assert _pkg_ids(got) == ["PS100000", "PS100001", "PS100002"]
