"""Reference counted package files (SMSPKG): the write that releases the last reference
deletes the file, so a reference taken in another write (a despooler forwarding the file,
a mini-job for another site) either comes first and keeps it, or comes after and finds it
gone and writes it again: never a mini-job whose file went under it."""

from __future__ import annotations

from pathlib import Path

from actors.config import load_hierarchy
from actors.site._paths import package_file, release_package_file
from actors.sitedb import SiteDatabase, ops
from tests.actors.flow_helpers import HIERARCHY


async def test_the_last_release_deletes_the_file_in_its_own_write(tmp_path: Path) -> None:
    cfg = load_hierarchy(HIERARCHY, root=tmp_path / "data")
    pck = package_file(tmp_path / "server", "PS200007", 1)
    pck.parent.mkdir(parents=True)
    pck.write_bytes(b"compressed package")
    path = str(pck)
    async with SiteDatabase.open(tmp_path / "site.db", hierarchy=cfg) as db:
        assert await db.write(lambda c: ops.add_package_file_ref(c, path)) == 1  # a send
        assert await db.write(lambda c: ops.add_package_file_ref(c, path)) == 2  # a forward
        # the send completes: the forward's reference keeps the file
        assert await db.write(lambda c: release_package_file(c, path)) == 1
        assert pck.read_bytes() == b"compressed package"
        # the forward hands over to its mini-job (its reference), then lets go of its own
        await db.write(
            lambda c: ops.insert_minijob(
                c,
                pkg_id="PS200007",
                version=1,
                dest_site="P01",
                final_site="P01",
                transfer_root=path,
                priority=2,
                size=18,
                now="x",
            )
        )
        assert await db.write(lambda c: release_package_file(c, path)) == 1
        assert pck.exists()
        # that mini-job's send completes: the last reference, the file goes with it
        assert await db.write(lambda c: release_package_file(c, path)) == 0
        assert not pck.exists()
        assert await db.package_file_refs(path) == 0
        # a release of a file already gone changes nothing
        assert await db.write(lambda c: release_package_file(c, path)) == 0
