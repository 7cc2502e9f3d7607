"""The reference's threads, processes, STA files and RDC signatures (issue #9, items 4-7):
each component thread logs under its own ID, each site server has its own PID, PkgXferMgr's
status goes to DistMgr as an ``.STA`` file in ``distmgr.box\\incoming`` which DistMgr deletes
once it is stored, the sending thread deletes its job, and a version's RDC signatures exist
when it is stored."""

from __future__ import annotations

import re
from pathlib import Path

from actors.site.messages import StatusFile, TransferStatus
from actors.sitedb import PkgStatusValue
from tests.actors.flow_helpers import (
    DP1,
    DP2,
    SITE,
    TIMEOUT,
    dp_id,
    install_probes,
    instant_links,
    job_log,
    log_text,
    message_ids,
    nal,
    open_hierarchy,
    until,
    write_tree,
)

_LINE = re.compile(r'<!\[LOG\[(.*?)\]LOG\]!>.*?thread="(\d+)"')
_STATMSG_IDS = re.compile(r"STATMSG: ID=(\d+) .*? PID=(\d+) TID=(\d+) ")


def _lines(text: str) -> list[tuple[str, int]]:
    """(text, thread ID) of every line of a CMTrace log."""
    return [(m.group(1), int(m.group(2))) for m in _LINE.finditer(text)]


def _thread_of(lines: list[tuple[str, int]], starts: str) -> int:
    (tid,) = {t for text, t in lines if text.lstrip("~").startswith(starts)}
    return tid


async def test_each_thread_logs_under_its_own_id_and_each_site_has_its_pid(
    tmp_path: Path,
) -> None:
    src = write_tree(tmp_path / "App", {"a.txt": b"a\n" * 100})
    async with open_hierarchy(tmp_path) as h:
        instant_links(h, SITE)
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1])
        await h.wait(pkg, timeout=TIMEOUT)
        other = await h.create_package("Other", src, site="PS2")
        await h.wait(other, timeout=TIMEOUT)
        distmgr = _lines(log_text(h, "distmgr.log"))
        pkgxfer = _lines(log_text(h, "PkgXferMgr.log"))
        h.servers["PS2"].logs.flush()
        ps2 = (h.servers["PS2"].root / "logs" / "distmgr.log").read_text()

    # DistMgr: the main thread starts a processing thread, which logs under the ID it named
    main = _thread_of(distmgr, "Found package properties updated notification")
    started = [t for t, _ in distmgr if "Started package processing thread" in t]
    named = {int(m) for m in re.findall(r"thread ID = 0x[0-9A-F]+ \((\d+)\)", " ".join(started))}
    processing = {  # (PS2's package reaches PS1 by DRS: its processing is not counted)
        t for text, t in distmgr if text.lstrip("~").startswith(f"Processing package {pkg.pkg_id} ")
    }
    assert processing <= named
    assert len(processing) == 2
    # a DP thread logs under the number its processing thread gave it
    (dp_thread,) = {
        int(m)
        for text, _ in distmgr
        for m in re.findall(r"Created DP processing thread (\d+) ", text)
    }
    assert _thread_of(distmgr, "DP Thread: Attempting to add or update") == dp_thread
    # the STA is processed on the replication processing thread
    replication = _thread_of(distmgr, "Processing STA for regular DP")
    assert len({main, dp_thread, replication, *processing}) == 5
    # PkgXferMgr: the main thread finds the send request; the sending thread it created sends
    (sending,) = {
        int(m, 16)
        for text, _ in pkgxfer
        for m in re.findall(r"Created sending thread \(Thread ID = 0x([0-9A-F]+)\)", text)
    }
    assert _thread_of(pkgxfer, "Sending thread starting for Job") == sending
    assert _thread_of(pkgxfer, "Found send request with ID") not in {sending, main}
    # STATMSG lines carry the thread that raised them, and their site server's PID
    statmsgs = {
        int(i): (int(pid), int(tid))
        for text, _ in distmgr
        for i, pid, tid in _STATMSG_IDS.findall(text)
    }
    assert statmsgs[2357][1] == dp_thread
    assert statmsgs[2330][1] == replication
    (ps2_pid,) = {int(pid) for _, pid, _ in _STATMSG_IDS.findall(ps2)}
    assert ps2_pid != statmsgs[2357][0]


async def test_status_goes_through_an_sta_file_that_distmgr_deletes(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"a.txt": b"a\n"})
    async with open_hierarchy(tmp_path) as h:
        instant_links(h, SITE)
        server = h.servers[SITE]
        await install_probes(server.db)
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1, DP2])
        await h.wait(pkg, timeout=TIMEOUT)

        async def all_deleted() -> bool:  # (the last STA's file goes after its status)
            text = log_text(h, "distmgr.log")
            return text.count("Processing incoming file") == text.count(
                "Successfully delete package status file"
            )

        await until(all_deleted)
        text = log_text(h, "distmgr.log")
        jobs = [j for j in await job_log(server.db, pkg.pkg_id) if j.op == "insert"]

        # every STA PkgXferMgr dropped was processed and deleted
        assert server.inbox.path.is_dir()
        assert not server.inbox.pending()
        processed = re.findall(r"Processing incoming file (\S+\.STA)\.", text)
        deleted = re.findall(r"Successfully delete package status file (\S+\.STA)", text)
        assert sorted(processed) == sorted(deleted)
        # per job: "in progress" when its sending thread starts (again after a retry under
        # load), then one "installed" (the name ends in the status)
        names = [Path(p).name for p in processed]
        assert sorted(n for n in names if n.endswith("3.STA")) == sorted(
            f"{j.job_id:07X}3.STA" for j in jobs
        )
        assert {f"{j.job_id:07X}0.STA" for j in jobs} <= set(names)
        # the jobs are gone: each went with its final status
        assert await server.db.scalar("SELECT COUNT(*) FROM DistributionJobs") == 0

        # An installed STA processed again (a crash after DistMgr stored it, before it
        # deleted the file) changes nothing: no second 2330, the file still goes.
        dp1 = await dp_id(server.db, DP1)
        job = next(j for j in jobs if j.dp_id == dp1)
        before = await message_ids(server.db, pkg.pkg_id, DP1)
        sta = TransferStatus(
            job.job_id, pkg.pkg_id, 1, DP1, nal(DP1), int(PkgStatusValue.INSTALLED)
        )
        path = await server.inbox.drop(sta, durable=True)
        # (no clock timeout: at this time scale 60 s is 6 ms, and this is database work)
        await h.bus.request(f"{SITE}/DistMgr", StatusFile(str(path)), timeout=None)
        assert not path.exists()
        assert await message_ids(server.db, pkg.pkg_id, DP1) == before
        assert before.count(2330) == 1


async def test_a_stored_version_has_its_rdc_signatures(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"a.bin": bytes(range(256)) * 64, "b.txt": b"b\n"})
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("App", src, site=SITE)
        await h.wait(pkg, timeout=TIMEOUT)
        library = h.servers[SITE].library
        manifest = library.manifest(f"{pkg.pkg_id}.1")
        text = log_text(h, "distmgr.log")
        sigs = sorted(p.stem for p in (library.root / "SigLib").glob("*/*.sig"))
        (logged,) = re.findall(r"The RDC signature hash for algorithm 32780 is (\w+)", text)
        assert logged == await library.sign_content(manifest.content_id)
    assert sigs == sorted(f.sha256 for f in manifest.files)
    assert f"Successfully created RDC signatures for package {pkg.pkg_id} version 1" in text
