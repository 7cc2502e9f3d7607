"""Pull DPs end to end on P01: the four phases, the PullDP agent's downloads over HTTP,
the state message through the MP relay and the State System, and the .PUL DistMgr ends
the job with."""

from __future__ import annotations

import random
import re
import sqlite3
from pathlib import Path

import anyio
import pytest

from actors import Hierarchy, TransferProgress
from actors.config import nal_path
from actors.dp import PackageInfoBundle
from actors.pulldp import _agent as pulldp_agent
from actors.site import _pullsend
from tests.actors.flow_helpers import (
    HIERARCHY,
    TIMEOUT,
    assert_extracts_identical,
    messages,
    until,
    write_tree,
)

SITE = "P01"
DP = "P01DP1.CONTOSO.COM"
PULL = "P01PDP1.CONTOSO.COM"
SCALE = 0.0001


def _open(tmp_path: Path, **options: float) -> Hierarchy:
    return Hierarchy.open(HIERARCHY, root=tmp_path / "data", time_scale=SCALE, **options)  # type: ignore[return-value]


def _rows(h: Hierarchy, sql: str) -> list[tuple[object, ...]]:
    path = h.servers[SITE].root / "site.db"
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def _log(h: Hierarchy, server: str, name: str) -> str:
    """A log, flushed first (the logs are buffered)."""
    h.servers[SITE].logs.flush()
    for logs in h.servers[SITE]._dp_logs:
        logs.flush()
    path = h.config.server_root(server) / "logs" / name
    return path.read_text(errors="replace") if path.exists() else ""


async def _ids(h: Hierarchy, pkg_id: str, dp: str) -> list[int]:
    """The IDs of the package's messages about ``dp`` (by NAL path or server name), in order."""
    nal = nal_path(dp, SITE)
    return [
        m.message_id
        for m in await messages(h.servers[SITE].db)
        if m.attributes.get(400) == pkg_id
        and (m.attributes.get(404) == nal or (404 not in m.attributes and dp in m.strings))
    ]


async def test_distribute_to_pull_dp(tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "src", {"a.txt": b"alpha" * 500, "sub/b.bin": bytes(range(256)) * 20}
    )
    async with _open(tmp_path) as h:
        pkg = await h.create_package("Pull1", source=src, site=SITE)
        await h.distribute(pkg, [DP])
        await h.wait(pkg, timeout=TIMEOUT)
        await h.distribute(pkg, [PULL])
        status = {s.dp: s for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status[PULL].state == "Installed"
        ids = await _ids(h, pkg.pkg_id, PULL)
        assert ids.index(2357) < ids.index(8210)
        assert 8200 not in ids
        assert _rows(h, "SELECT COUNT(*) FROM PullDPResponse") == [(0,)]
        assert _rows(h, "SELECT COUNT(*) FROM DistributionJobs") == [(0,)]
        pull_log = _log(h, PULL, "PullDP.log")
        assert "0 files already exists, 2 files to download" in pull_log
        assert f"All 1 content jobs for {pkg.pkg_id}.1 have completed" in pull_log
        await assert_extracts_identical(h, pkg, [PULL], src, tmp_path / "out")
        site = h.config.site(SITE).server
        assert "FileType=SMX" in _log(h, site, "MP_Relay.log")
        assert "Processing file:" in _log(h, site, "statesys.log")
        dist = _log(h, site, "distmgr.log")
        assert f"Package Server {nal_path(PULL, SITE)} is a PullDP." in dist
        assert f"Processing PullDP response {SITE} - {nal_path(PULL, SITE)}" in dist
        # ContentDPMap follows every install and removal: the sources query's other half
        sql = "SELECT ServerName, Version FROM ContentDPMap ORDER BY ServerName"
        assert _rows(h, sql) == [(DP, 1), (PULL, 1)]
        await h.remove(pkg, [PULL])
        status = {s.dp: s.state for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status[PULL] == "Removed"
        assert _rows(h, sql) == [(DP, 1)]
        assert h.servers[SITE].pull_dps[PULL].library.content_ids(pkg.pkg_id) == []


async def test_progress_events_and_a_corrupt_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TransferProgress comes from the pull DP's downloads; a .TZ damaged on its way (its
    hash no longer matches the notification's) is refused: Failed, 8204 with the reason."""
    src = write_tree(tmp_path / "src", {"a.bin": bytes(range(256)) * 400})
    async with _open(tmp_path) as h:
        pkg = await h.create_package("Progress", source=src, site=SITE)
        await h.distribute(pkg, [DP])
        await h.wait(pkg, timeout=TIMEOUT)
        events: list[TransferProgress] = []
        async with h.subscribe(buffer=10_000) as sub, anyio.create_task_group() as tg:

            async def collect() -> None:
                async for e in sub:
                    if isinstance(e, TransferProgress) and e.dp == PULL:
                        events.append(e)

            tg.start_soon(collect)
            await h.distribute(pkg, [PULL])
            status = {s.dp: s.state for s in await h.wait(pkg, timeout=TIMEOUT)}
            assert status[PULL] == "Installed"
            await until(lambda: _done(events))
            tg.cancel_scope.cancel()
        assert (events[-1].bytes_sent, events[-1].bytes_total) == (256 * 400, 256 * 400)
        # the intermediate state message (0 %) went through the State System too
        assert "ActionState 2" in _log(h, h.config.site(SITE).server, "distmgr.log")

        real = _pullsend.bundle_bytes

        def damaged(bundle: PackageInfoBundle) -> tuple[bytes, str]:
            data, digest = real(bundle)
            return data[:-1] + bytes([data[-1] ^ 1]), digest

        monkeypatch.setattr(_pullsend, "bundle_bytes", damaged)
        await h.redistribute(pkg, PULL)
        await until(lambda: _has_failed(h, pkg.pkg_id))
        assert _rows(h, "SELECT COUNT(*) FROM DistributionJobs") == [(0,)]
        assert "package info bundle hash" in _log(h, PULL, "PullDP.log")


async def test_intermediate_state_messages_carry_the_running_percentage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """State 2 messages carry the download's percentage at each 10 % step (here each file
    is a fifth of the job; the clock's minimum interval between two is lifted)."""
    monkeypatch.setattr(pulldp_agent, "STATE_INTERVAL", 0.0)
    rng = random.Random(8)
    src = write_tree(tmp_path / "src", {f"f{i}.bin": rng.randbytes(2048) for i in range(5)})
    async with _open(tmp_path) as h:
        pkg = await h.create_package("Percent", source=src, site=SITE)
        await h.distribute(pkg, [DP])
        await h.wait(pkg, timeout=TIMEOUT)
        await h.distribute(pkg, [PULL])
        status = {s.dp: s.state for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status[PULL] == "Installed"
        log = _log(h, h.config.site(SITE).server, "distmgr.log")
        carried = re.findall(r"ActionState 2, PkgStatus \d+, ActionData = (\d+)", log)
        # ... and the job's last one, once its downloads are done, 100 % and its bytes
        assert carried == ["0", "20", "40", "60", "80", "100"]


async def _done(events: list[TransferProgress]) -> bool:
    return bool(events) and events[-1].bytes_sent == events[-1].bytes_total


async def _has_failed(h: Hierarchy, pkg_id: str) -> bool:
    status = {s.dp: s for s in await h.content_status(pkg_id)}
    return status[PULL].state == "Failed" and status[PULL].last_message == 8204
