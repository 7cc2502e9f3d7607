"""A release that ships empty folders (``logs/``, ``plugins/``) keeps them on every kind of
DP: within a site, across sites (PCK, then a DLT that drops one and adds another), and on a
pull DP that downloads over HTTP. ``extract`` from each rebuilds the source as it was."""

from __future__ import annotations

from pathlib import Path

from tests.actors.flow_helpers import (
    TIMEOUT,
    assert_extracts_identical,
    open_hierarchy,
    write_tree,
)

ACROSS = ["PS1DP1.CONTOSO.COM", "SS1DP1.CONTOSO.COM"]
P01 = ["P01DP1.CONTOSO.COM", "P01PDP1.CONTOSO.COM"]  # the pull DP's source first


def _release(root: Path) -> Path:
    src = write_tree(root, {"bin/app": b"\x7fELF" + bytes(4000), "README": b"read me\n"})
    (src / "logs").mkdir()
    (src / "plugins" / "disabled").mkdir(parents=True)
    return src


async def test_empty_folders_reach_every_kind_of_dp_and_follow_an_update(tmp_path: Path) -> None:
    src = _release(tmp_path / "src")
    pull_src = _release(tmp_path / "pull-src")
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("WithFolders", src, site="CS1")
        await h.distribute(pkg, ACROSS)
        assert {s.state for s in await h.wait(pkg, timeout=TIMEOUT)} == {"Installed"}
        await assert_extracts_identical(h, pkg, ACROSS, src, tmp_path / "v1")

        (src / "logs").rmdir()
        (src / "cache").mkdir()
        await h.update(pkg)
        status = await h.wait(pkg, timeout=TIMEOUT)
        assert {(s.state, s.version) for s in status} == {("Installed", 2)}
        await assert_extracts_identical(h, pkg, ACROSS, src, tmp_path / "v2")

        local = await h.create_package("WithFoldersPull", pull_src, site="P01")
        for dp in P01:  # the source DP holds it before the pull DP asks for it
            await h.distribute(local, [dp])
            await h.wait(local, timeout=TIMEOUT)
        assert {s.state for s in await h.wait(local, timeout=TIMEOUT)} == {"Installed"}
        await assert_extracts_identical(h, local, P01, pull_src, tmp_path / "pull")
