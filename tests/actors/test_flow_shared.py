"""Single-instance storage across packages on a DP: a file two packages share is sent and
stored once per DP, and stays until the last package that uses it leaves the DP."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.actors.flow_helpers import (
    DP1,
    DP2,
    SITE,
    TIMEOUT,
    assert_extracts_identical,
    dp_library_root,
    filelib,
    open_hierarchy,
    staged_files,
    write_tree,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()


async def test_shared_file_stored_once_and_kept_while_referenced(tmp_path: Path) -> None:
    shared = os.urandom(300_000)
    only_a = b"package A's own file\n"
    only_b = b"package B's own file\n" * 3
    src_a = write_tree(tmp_path / "A", {"redist/vcredist.bin": shared, "a.txt": only_a})
    # the same bytes under another name and folder in B
    src_b = write_tree(tmp_path / "B", {"prereq/runtime.bin": shared, "b.txt": only_b})
    out = tmp_path / "out"
    async with open_hierarchy(tmp_path) as h:
        site = h.servers[SITE]
        a = await h.create_package("A", src_a, site=SITE)
        b = await h.create_package("B", src_b, site=SITE)
        await h.distribute(a, [DP1, DP2])
        await h.wait(a, timeout=TIMEOUT)

        # B's copy of the shared file is already on each DP: only b.txt crosses the links
        sent_before = {dp: site.links[dp].bytes_sent for dp in (DP1, DP2)}
        await h.distribute(b, [DP1, DP2])
        status = await h.wait(b, timeout=TIMEOUT)
        assert [(s.dp, s.state) for s in status] == [(DP1, "Installed"), (DP2, "Installed")]
        for dp in (DP1, DP2):
            assert site.links[dp].bytes_sent - sent_before[dp] == len(only_b)
            library = site.dp_library(dp)
            assert library is not None
            assert filelib(library.root) == sorted({_sha(shared), _sha(only_a), _sha(only_b)})
            assert library.references(_sha(shared)) == 2
            assert staged_files(h, dp) == []
        await assert_extracts_identical(h, a, [DP1, DP2], src_a, out)
        await assert_extracts_identical(h, b, [DP1, DP2], src_b, out)

        # A leaves DP1: its own file goes, the shared one stays for B
        await h.remove(a, [DP1])
        status = await h.wait(a, timeout=TIMEOUT)
        assert [(s.dp, s.state) for s in status] == [(DP1, "Removed"), (DP2, "Installed")]
        assert filelib(dp_library_root(h, DP1)) == sorted({_sha(shared), _sha(only_b)})
        await assert_extracts_identical(h, b, [DP1], src_b, out)
        # DP2 is untouched
        assert filelib(dp_library_root(h, DP2)) == sorted(
            {_sha(shared), _sha(only_a), _sha(only_b)}
        )

        # B leaves DP1 too: nothing references the shared file there any more
        await h.remove(b, [DP1])
        await h.wait(b, timeout=TIMEOUT)
        assert filelib(dp_library_root(h, DP1)) == []

        # deleting A keeps the shared file on DP2 (and at the site) for B
        await h.delete(a, timeout=TIMEOUT)
        assert filelib(dp_library_root(h, DP2)) == sorted({_sha(shared), _sha(only_b)})
        assert filelib(site.library.root) == sorted({_sha(shared), _sha(only_b)})
        await assert_extracts_identical(h, b, [DP2], src_b, out)
        await h.delete(b, timeout=TIMEOUT)
        assert filelib(dp_library_root(h, DP2)) == []
        assert filelib(site.library.root) == []
