"""Kills across sites: the process SIGKILLed during a send between sites (the package
file written at the remote end, its instruction not) and during despooling (the content
in the library, the database not told); the next run finishes with every DP Installed
once, no duplicate send request and no package file left behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from actors import Hierarchy
from actors._crashpoints import CRASH_AT_ENV
from actors.site._paths import receive_box, smspkg
from actors.testing import write_tree
from tests.actors.flow_helpers import HIERARCHY, TIME_SCALE, TIMEOUT, message_ids, replicated

PS1DP1 = "PS1DP1.CONTOSO.COM"
SS1DP1 = "SS1DP1.CONTOSO.COM"
_SCRIPT = """
import sys
import anyio
from actors import Hierarchy

async def main(hierarchy, root, src, scale):
    async with Hierarchy.open(hierarchy, root=root, time_scale=float(scale)) as h:
        pkg = await h.create_package("Crash", src, site="CS1")
        await h.distribute(pkg, ["PS1DP1.CONTOSO.COM", "SS1DP1.CONTOSO.COM"])
        await h.wait(pkg, timeout=60)
    sys.exit(5)  # the crash point was never reached

anyio.run(main, *sys.argv[1:])
"""


@pytest.mark.parametrize("point", ["sender.package_written", "despooler.extracted"])
async def test_a_kill_across_sites_loses_and_repeats_nothing(point: str, tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "src", {"a.txt": b"alpha\n" * 2000, "b.bin": bytes(range(256)) * 40}
    )
    root = tmp_path / "data"
    env = {**os.environ, CRASH_AT_ENV: point}
    with anyio.fail_after(120):
        done = await anyio.run_process(
            [sys.executable, "-c", _SCRIPT, str(HIERARCHY), str(root), str(src), str(TIME_SCALE)],
            env=env,
            check=False,
        )
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    async with Hierarchy.open(HIERARCHY, root=root, time_scale=TIME_SCALE) as h:
        (pkg,) = await h.packages("CS1")
        results = await h.wait(pkg, timeout=TIMEOUT)
        assert sorted((r.dp, r.state, r.version) for r in results) == [
            (PS1DP1, "Installed", 1),
            (SS1DP1, "Installed", 1),
        ]
        await replicated(h)
        for site, dp in (("PS1", PS1DP1), ("SS1", SS1DP1)):
            db = h.servers[site].db
            assert (await message_ids(db, pkg.pkg_id, "*")).count(4400) == 1, site
            assert [m for m in await message_ids(db, pkg.pkg_id, "*") if m == 2330] == [2330], dp
        for site in ("CS1", "PS1", "SS1"):
            server = h.servers[site]
            assert await server.db.minijobs() == []
            assert list(smspkg(server.root).glob("*.PCK.*")) == [], site
            assert [p for p in receive_box(server.root).glob("*") if p.is_file()] == [], site
        # the second run sends what the first left unsent, once: nothing again after a
        # kill while despooling, the rest of the interrupted send after a kill during it
        link = h.servers["CS1"].site_link("PS1")
        assert link.transfers == (1 if point == "sender.package_written" else 0)
