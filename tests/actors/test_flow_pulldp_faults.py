"""Pull DPs when things go wrong, and their updates: no source yet (8212, retries), a full
pull DP (8211), a source that is cut or serves corrupt bytes (fallback to the next source,
resume from the offset, nothing corrupt kept), an update fetching only the missing chunks
(RDC, bytes counted on the HTTP path), a redistribute downloading everything again, and a
kill during a download."""

from __future__ import annotations

import os
import random
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from actors import Hierarchy, addresses
from actors.pulldp import PullDPAgent
from actors.pulldp import _agent as pulldp_agent
from actors.site import PkgXferMgr
from actors.site._pullsend import PollPullJob
from actors.site._statesys import statesys_incoming
from actors.sitedb import ops
from tests.actors.flow_helpers import HIERARCHY, TIMEOUT, until, write_tree
from tests.actors.test_flow_pulldp import DP, PULL, SCALE, SITE, _ids, _log, _rows

DP2 = "P01DP2.CONTOSO.COM"


def _two_sources(tmp_path: Path) -> Path:
    """The default hierarchy with a second source for P01PDP1 (no link to it: local)."""
    text = HIERARCHY.read_text()
    one = 'sources = ["P01DP1.CONTOSO.COM"]'
    assert one in text
    text = text.replace(one, 'sources = ["P01DP1.CONTOSO.COM", "P01DP2.CONTOSO.COM"]')
    text += '\n[[dp]]\nname = "P01DP2.CONTOSO.COM"\nsite = "P01"\n'
    path = tmp_path / "hierarchy.toml"
    path.write_text(text)
    return path


def _open(tmp_path: Path, config: Path = HIERARCHY) -> Hierarchy:
    return Hierarchy.open(config, root=tmp_path / "data", time_scale=SCALE)  # type: ignore[return-value]


def _agent(h: Hierarchy) -> PullDPAgent:
    return h.servers[SITE].pull_dps[PULL]


async def _state(h: Hierarchy, pkg: object, dp: str) -> str:
    return {s.dp: s.state for s in await h.content_status(pkg)}[dp]  # type: ignore[arg-type]


async def test_no_source_yet_retries_with_8212_then_succeeds(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": b"a" * 3000})
    async with _open(tmp_path) as h:
        pkg = await h.create_package("NoSource", source=src, site=SITE)
        await h.distribute(pkg, [PULL])
        await until(lambda: _has(h, pkg.pkg_id, 8212, 2))
        assert await _state(h, pkg, PULL) in ("Retrying", "InProgress")
        await h.distribute(pkg, [DP])  # the source gets it: the next try finds it
        status = {s.dp: s.state for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status == {DP: "Installed", PULL: "Installed"}
        ids = await _ids(h, pkg.pkg_id, PULL)
        assert ids[-1] == 8210
        assert "Unable to find any source locations" in _log(
            h, h.config.site(SITE).server, "PkgXferMgr.log"
        )


async def test_a_source_installing_the_package_wakes_the_pull_dp_at_once(tmp_path: Path) -> None:
    """The pull DP and its source targeted together: the pull DP's first try finds no
    source (8212); the source DP installing the package retries it then, not after
    ``pulldp_retry_delay`` (here never: 1e9 s)."""
    config = _long_delays(tmp_path, "pulldp_retry_delay = 1200.0")
    src = write_tree(tmp_path / "src", {"a.txt": b"a" * 3000})
    async with _open(tmp_path, config) as h:
        pkg = await h.create_package("Together", source=src, site=SITE)
        await h.distribute(pkg, [PULL])
        await until(lambda: _has(h, pkg.pkg_id, 8212))
        await h.distribute(pkg, [DP])
        status = {s.dp: s.state for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status == {DP: "Installed", PULL: "Installed"}
        assert (await _ids(h, pkg.pkg_id, PULL)).count(8212) == 1
        assert f"Source DP {DP} now holds package {pkg.pkg_id} version 1" in _log(
            h, h.config.site(SITE).server, "PkgXferMgr.log"
        )


def _long_delays(tmp_path: Path, *settings: str) -> Path:
    """The default hierarchy with ``settings`` (as the file writes them) put off for ever."""
    text = HIERARCHY.read_text()
    for setting in settings:
        assert setting in text
        text = text.replace(setting, setting.split("=")[0] + "= 1e9")
    config = tmp_path / "hierarchy.toml"
    config.write_text(text)
    return config


async def _has(h: Hierarchy, pkg_id: str, message_id: int, count: int = 1) -> bool:
    return (await _ids(h, pkg_id, PULL)).count(message_id) >= count


async def test_full_pull_dp_retries_with_8211_until_a_job_ends(tmp_path: Path) -> None:
    text = HIERARCHY.read_text().replace("max_active_jobs = 50", "max_active_jobs = 1")
    config = tmp_path / "hierarchy.toml"
    config.write_text(text)
    a = write_tree(tmp_path / "a", {"a.txt": b"a" * 3000})
    b = write_tree(tmp_path / "b", {"b.txt": b"b" * 3000})
    async with _open(tmp_path, config) as h:
        one = await h.create_package("One", source=a, site=SITE)
        two = await h.create_package("Two", source=b, site=SITE)
        for pkg in (one, two):
            await h.distribute(pkg, [DP])
            await h.wait(pkg, timeout=TIMEOUT)
        link = _agent(h).links[DP]
        link.down = True  # One's download fails and retries: its job holds the capacity
        await h.distribute(one, [PULL])
        await until(lambda: _notified(h))
        await h.distribute(two, [PULL])
        await until(lambda: _has(h, two.pkg_id, 8211))
        link.down = False
        for pkg in (one, two):
            status = {s.dp: s.state for s in await h.wait(pkg, timeout=TIMEOUT)}
            assert status[PULL] == "Installed"
        assert _rows(h, "SELECT COUNT(*) FROM DistributionJobs") == [(0,)]


async def _notified(h: Hierarchy) -> bool:
    return _rows(h, "SELECT COUNT(*) FROM DistributionJobs WHERE SendAction <> ''") == [(1,)]


async def test_cut_source_falls_back_and_resumes_from_the_offset(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(300_000)
    src = write_tree(tmp_path / "src", {"big.bin": data})
    async with _open(tmp_path, _two_sources(tmp_path)) as h:
        pkg = await h.create_package("Cut", source=src, site=SITE)
        await h.distribute(pkg, [DP, DP2])
        await h.wait(pkg, timeout=TIMEOUT)
        agent = _agent(h)
        agent.links[DP].inject_cut(100_000)
        await h.distribute(pkg, [PULL])
        status = {s.dp: s.state for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status[PULL] == "Installed"
        assert agent.links[DP].cuts == 1
        assert "was cut after 100000 bytes" in _log(h, PULL, "DataTransferService.log")
        assert agent.bytes_downloaded == len(data)  # resumed: no byte fetched twice
        out = tmp_path / "out"
        await h.extract(pkg, PULL, out)
        assert (out / "big.bin").read_bytes() == data


async def test_corrupt_source_file_is_not_kept_and_the_next_source_serves(tmp_path: Path) -> None:
    data = random.Random(2).randbytes(50_000)
    src = write_tree(tmp_path / "src", {"f.bin": data})
    async with _open(tmp_path, _two_sources(tmp_path)) as h:
        pkg = await h.create_package("Corrupt", source=src, site=SITE)
        await h.distribute(pkg, [DP, DP2])
        await h.wait(pkg, timeout=TIMEOUT)
        library = h.servers[SITE].dp_library(DP)
        assert library is not None
        sha = library.manifest(f"{pkg.pkg_id}.1").files[0].sha256
        stored = library.file_path(sha)
        os.chmod(stored, 0o644)
        stored.write_bytes(b"X" * len(data))  # the first source now serves other bytes
        await h.distribute(pkg, [PULL])
        status = {s.dp: s.state for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status[PULL] == "Installed"
        pulled = _agent(h).library
        assert (await pulled.verify(f"{pkg.pkg_id}.1")).corrupt == ()
        assert pulled.file_path(sha).read_bytes() == data
        assert "did not match its hash" in _log(h, PULL, "DataTransferService.log")


async def test_update_fetches_only_missing_chunks_and_redistribute_fetches_all(
    tmp_path: Path,
) -> None:
    rng = random.Random(3)
    data = bytearray(rng.randbytes(400_000))
    src = write_tree(tmp_path / "src", {"big.bin": bytes(data), "same.txt": b"s" * 5000})
    async with _open(tmp_path) as h:
        pkg = await h.create_package("Rdc", source=src, site=SITE)
        await h.distribute(pkg, [DP, PULL])
        await h.wait(pkg, timeout=TIMEOUT)
        agent = _agent(h)
        first = agent.bytes_downloaded
        # the text file crossed zstd-encoded, the random one as it is
        assert len(data) < first < len(data) + 100
        # the pull DP's bytes reach DPTransferBytes (its last in-progress message)
        assert await _moved(h, pkg) == (first, 0)
        data[200_000:201_000] = rng.randbytes(1000)
        (src / "big.bin").write_bytes(bytes(data))
        wire = agent.wire_bytes
        await h.update(pkg)
        status = {s.dp: (s.state, s.version) for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status[PULL] == ("Installed", 2)
        update = agent.bytes_downloaded - first
        assert 0 < update < len(data) // 10  # the signature and the changed chunks only
        # on the wire with the HTTP lines and headers: five requests (four signature
        # rounds, one for the ranges), a few hundred bytes each
        assert update + 5 * 200 < agent.wire_bytes - wire < update + 5 * 1000
        assert await _moved(h, pkg) == (0, update)
        assert "Created SignatureDownload DTS job" in _log(h, PULL, "PullDP.log")
        out = tmp_path / "out"
        await h.extract(pkg, PULL, out)
        assert (out / "big.bin").read_bytes() == bytes(data)
        before = agent.bytes_downloaded
        await h.redistribute(pkg, PULL)
        await until(lambda: _redistributed(h, agent, before))
        await h.wait(pkg, timeout=TIMEOUT)
        assert agent.bytes_downloaded - before == first
        assert "redistribute/redownload all files" in _log(h, PULL, "PullDP.log")
        assert await _moved(h, pkg) == (first, 0)
        sql = "SELECT Version, BytesFull, BytesDelta FROM DPTransferBytes WHERE NALPath LIKE"
        assert _rows(h, f"{sql} '%P01PDP1%'") == [(2, first, 0)]


async def _moved(h: Hierarchy, pkg: object) -> tuple[int, int]:
    status = {s.dp: s for s in await h.content_status(pkg)}  # type: ignore[arg-type]
    return status[PULL].bytes_full, status[PULL].bytes_delta


async def test_content_status_shows_the_download_percentage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download cut half way waits for its retry (a long pulldp_retry_delay): the pull DP
    is InProgress at 50 %, as its last in-progress state message said; once Installed no
    percentage is shown, and the bytes of both tries are the install's (the state messages
    end the job: the status poll, the backup, is put off)."""
    monkeypatch.setattr(pulldp_agent, "STATE_INTERVAL", 0.0)
    config = _long_delays(tmp_path, "pulldp_retry_delay = 1200.0", "pulldp_polling_delay = 3600.0")
    data = random.Random(9).randbytes(300_000)
    src = write_tree(tmp_path / "src", {"half.bin": data})
    async with _open(tmp_path, config) as h:
        pkg = await h.create_package("Percent", source=src, site=SITE)
        await h.distribute(pkg, [DP])
        await h.wait(pkg, timeout=TIMEOUT)
        assert {s.dp: s.percent for s in await h.content_status(pkg)} == {DP: None}
        agent = _agent(h)
        agent.links[DP].inject_cut(150_000)
        await h.distribute(pkg, [PULL])
        await until(lambda: _percent_is(h, pkg, 50))
        status = {s.dp: s for s in await h.content_status(pkg)}
        assert status[PULL].state == "InProgress"
        assert status[DP].percent is None  # a standard DP reports none
        agent.links[DP].inject_cut(10**9)  # (disarmed: nothing that long crosses)
        await h.bus.send(agent.address, pulldp_agent.RunPullJob(pkg.pkg_id))  # retry now
        status = {s.dp: s for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert (status[PULL].state, status[PULL].percent) == ("Installed", None)
        assert agent.bytes_downloaded == len(data)
        assert (status[PULL].bytes_full, status[PULL].bytes_delta) == (len(data), 0)


async def _percent_is(h: Hierarchy, pkg: object, percent: int) -> bool:
    status = {s.dp: s for s in await h.content_status(pkg)}  # type: ignore[arg-type]
    return status[PULL].percent == percent


async def _redistributed(h: Hierarchy, agent: PullDPAgent, before: int) -> bool:
    return agent.bytes_downloaded > before and _rows(
        h, "SELECT COUNT(*) FROM DistributionJobs"
    ) == [(0,)]


async def test_kill_during_a_download_then_reopen_installs_once(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.bin": random.Random(4).randbytes(20_000)})
    pkg_id = ""
    try:
        async with _open(tmp_path) as h:
            pkg = await h.create_package("Kill", source=src, site=SITE)
            pkg_id = pkg.pkg_id
            await h.distribute(pkg, [DP])
            await h.wait(pkg, timeout=TIMEOUT)
            _agent(h).links[DP].down = True
            await h.distribute(pkg, [PULL])
            await until(lambda: _notified(h))
            raise KeyboardInterrupt  # a kill: nothing drains
    except KeyboardInterrupt:
        pass
    async with _open(tmp_path) as h:
        status = {s.dp: s.state for s in await h.wait(pkg_id, timeout=TIMEOUT)}
        assert status[PULL] == "Installed"
        assert (await _ids(h, pkg_id, PULL)).count(8210) == 1
        assert _rows(h, "SELECT COUNT(*) FROM PullDPResponse") == [(0,)]
        assert _rows(h, "SELECT COUNT(*) FROM DistributionJobs") == [(0,)]


async def test_state_message_left_in_the_relay_is_processed_after_a_kill(tmp_path: Path) -> None:
    """The State System is down when the state message arrives: the MP relay's .SMX waits
    in statesys.box\\incoming; after a kill and a reopen it is processed, the pull DP ends
    Installed once and no PullDPResponse row is left."""
    src = write_tree(tmp_path / "src", {"a.bin": random.Random(6).randbytes(10_000)})
    pkg_id = ""
    incoming = Path()
    try:
        async with _open(tmp_path) as h:
            pkg = await h.create_package("Relay", source=src, site=SITE)
            pkg_id = pkg.pkg_id
            await h.distribute(pkg, [DP])
            await h.wait(pkg, timeout=TIMEOUT)
            await h.bus.stop_actor(addresses.statesys(SITE))
            incoming = statesys_incoming(h.servers[SITE].root)
            await h.distribute(pkg, [PULL])
            # in progress (0 %, then 100 % with the bytes), then success
            await until(lambda: _smx_waiting(incoming, 3))
            raise KeyboardInterrupt  # a kill
    except KeyboardInterrupt:
        pass
    async with _open(tmp_path) as h:
        status = {s.dp: s.state for s in await h.wait(pkg_id, timeout=TIMEOUT)}
        assert status[PULL] == "Installed"
        await until(lambda: _smx_waiting(incoming, 0, at_most=True))
        # The in-progress message may be stored after the success (the State System
        # takes both at the start): it changes nothing and its row goes too.
        await until(lambda: _no_pull_response(h))
        assert (await _ids(h, pkg_id, PULL)).count(8210) == 1
        # the bytes the last in-progress message carried are recorded whichever of it
        # and the success the State System stored first
        status = {s.dp: s for s in await h.content_status(pkg_id)}
        assert (status[PULL].bytes_full, status[PULL].bytes_delta) == (10_000, 0)
        assert _rows(h, "SELECT COUNT(*) FROM DistributionJobs") == [(0,)]


async def _no_pull_response(h: Hierarchy) -> bool:
    return _rows(h, "SELECT COUNT(*) FROM PullDPResponse") == [(0,)]


async def _smx_waiting(folder: Path, count: int, *, at_most: bool = False) -> bool:
    found = _smx_count(folder)
    return found <= count if at_most else found >= count


def _smx_count(folder: Path) -> int:
    return len(list(folder.glob("*.SMX"))) if folder.is_dir() else 0


async def test_cancel_stops_a_pull_dp_download(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.bin": random.Random(7).randbytes(10_000)})
    async with _open(tmp_path) as h:
        pkg = await h.create_package("Cancel", source=src, site=SITE)
        await h.distribute(pkg, [DP])
        await h.wait(pkg, timeout=TIMEOUT)
        agent = _agent(h)
        agent.links[DP].down = True  # the download fails and retries: in flight
        await h.distribute(pkg, [PULL])
        await until(lambda: _notified(h))
        assert await h.cancel(pkg, PULL)
        status = {s.dp: s for s in await h.content_status(pkg)}
        assert status[PULL].state == "Failed"
        assert _rows(h, "SELECT COUNT(*) FROM DistributionJobs") == [(0,)]
        # the stored job is gone: a retry of the download finds nothing to run
        await until(lambda: _no_stored_job(agent))
        assert agent.library.content_ids(pkg.pkg_id) == []
        assert {s.dp: s.state for s in await h.content_status(pkg)}[PULL] == "Failed"


async def _no_stored_job(agent: PullDPAgent) -> bool:
    return not list(agent.jobs.glob("*.xml"))


async def test_cancel_on_a_pull_dp_that_holds_the_version_ends_installed(tmp_path: Path) -> None:
    """A redistribute to a pull DP that holds the version, cancelled while its download
    retries: the DP still has the version whole, so it ends Installed (8204 says cancelled),
    and its library keeps the version."""
    data = random.Random(10).randbytes(20_000)
    src = write_tree(tmp_path / "src", {"a.bin": data})
    async with _open(tmp_path) as h:
        pkg = await h.create_package("Held", source=src, site=SITE)
        await h.distribute(pkg, [DP, PULL])
        await h.wait(pkg, timeout=TIMEOUT)
        agent = _agent(h)
        agent.links[DP].down = True  # the download fails and retries: in flight
        await h.redistribute(pkg, PULL)
        await until(lambda: _notified(h))
        assert await h.cancel(pkg, PULL)
        status = {s.dp: s for s in await h.content_status(pkg)}
        assert (status[PULL].state, status[PULL].version) == ("Installed", 1)
        assert status[PULL].last_message == 8204
        assert _rows(h, "SELECT COUNT(*) FROM DistributionJobs") == [(0,)]
        await until(lambda: _no_stored_job(agent))
        assert agent.library.content_ids(pkg.pkg_id) == [f"{pkg.pkg_id}.1"]
        agent.links[DP].down = False
        out = tmp_path / "out"
        await h.extract(pkg, PULL, out)
        assert (out / "a.bin").read_bytes() == data


async def test_a_status_poll_racing_the_state_message_raises_no_second_8210(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status poll (the backup) finds the pull DP holding the version, and the pull
    DP's state message ends the job before the poll stores its 8210 (here: the job's row
    deleted as the poll drops its STA): the poll stores no 8210 and leaves no STA, so the
    DP ends Installed with one 8210, the state message's."""
    config = _long_delays(tmp_path, "pulldp_polling_delay = 3600.0")
    src = write_tree(tmp_path / "src", {"a.bin": random.Random(8).randbytes(10_000)})
    async with _open(tmp_path, config) as h:
        pkg = await h.create_package("Race", source=src, site=SITE)
        await h.distribute(pkg, [DP])
        await h.wait(pkg, timeout=TIMEOUT)
        await h.bus.stop_actor(addresses.statesys(SITE))  # the state message waits
        incoming = statesys_incoming(h.servers[SITE].root)
        await h.distribute(pkg, [PULL])
        await until(lambda: _smx_waiting(incoming, 3))
        [(job_id,)] = _rows(h, "SELECT JobID FROM DistributionJobs")
        db = h.servers[SITE].db
        drop = PkgXferMgr._drop_status

        async def ended_meanwhile(self: PkgXferMgr, job: Any, *args: Any, **kw: Any) -> Any:
            await db.write(partial(ops.delete_job, job_id=job.job_id))
            return await drop(self, job, *args, **kw)

        monkeypatch.setattr(PkgXferMgr, "_drop_status", ended_meanwhile)
        await h.bus.send(addresses.pkgxfermgr(SITE), PollPullJob(job_id))
        log = h.config.site(SITE).server
        await until(lambda: _logged(h, log, f"Finished sending SWD package {pkg.pkg_id}"))
        await until(lambda: _logged(h, log, "Pull DP Sending thread complete", 2))
        assert 8210 not in await _ids(h, pkg.pkg_id, PULL)
        assert not h.servers[SITE].inbox.holds_any(job_id, (1, 2, 3, 4))


async def _logged(h: Hierarchy, server: str, line: str, count: int = 1) -> bool:
    return _log(h, server, "PkgXferMgr.log").count(line) >= count
