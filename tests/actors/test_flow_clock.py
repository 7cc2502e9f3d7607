"""One clock stamps every time the hierarchy writes (issue #9, items 1 and 2, begun): rows,
status messages and log lines all carry the bus clock's time, in the reference's formats."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from actors import Hierarchy
from bus import ManualClock
from tests.actors.flow_helpers import (
    DP1,
    HIERARCHY,
    SITE,
    TIMEOUT,
    install_probes,
    instant_links,
    job_log,
    log_text,
    messages,
    nal,
    server_rows,
    write_tree,
)

WHEN = dt.datetime(2016, 5, 16, 19, 26, 58, tzinfo=dt.UTC)  # the reference's example


async def test_rows_messages_and_logs_carry_the_bus_clock_time(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"a.txt": b"a\n"})
    clock = ManualClock(wall_start=WHEN)  # never advanced: every stamp is WHEN
    async with Hierarchy.open(HIERARCHY, root=tmp_path / "data", clock=clock) as h:
        instant_links(h, SITE)
        db = h.servers[SITE].db
        await install_probes(db)
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1])
        await h.wait(pkg, timeout=TIMEOUT)

        # DistributionJobs.CreationTime: YYYY/MM/DD; LastRefresh: MM/DD/YYYY (reference)
        (job, *_) = await job_log(db, pkg.pkg_id)
        assert job.created == "2016/05/16 19:26:58"
        assert (await server_rows(db, pkg.pkg_id))[nal(DP1)]["last_refresh"] == (
            "05/16/2016 19:26:58"
        )
        assert (
            await db.scalar("SELECT LastRefresh FROM SMSPackages WHERE PkgID = ?", (pkg.pkg_id,))
            == "05/16/2016 19:26:58"
        )
        # 2357's time is the LastRefresh written in the same step; every message is WHEN
        stamps = {m.time for m in await messages(db)}
        assert stamps == {WHEN}
        # the components' log lines too
        for log in ("distmgr.log", "PkgXferMgr.log", "smsdbmon.log", "SMSProv.log"):
            text = log_text(h, log)
            assert 'date="05-16-2016"' in text, log
            assert 'time="19:26:58.000+000"' in text, log
        # and what the triggers write: PkgNotification.TimeKey (SiteClock, set per commit)
        keys = await db.fetchall("SELECT DISTINCT TimeKey FROM PkgNotification")
        assert keys == [("2016-05-16 19:26:58.000",)]
