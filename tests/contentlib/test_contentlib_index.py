"""The open index: a clean close lets the next open skip reading every manifest, and
nothing that changed on disk while the library was closed is taken from it unchecked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from contentlib import ContentLibError, ContentLibrary, _index, _recovery
from contentlib._model import Manifest
from tests.contentlib.contentlib_helpers import chunks, listing, make_tree, sha

FILES = {"setup.exe": os.urandom(20_000), "readme.txt": b"hello\n"}


class _Loads:
    """Counts the manifests an open reads from DataLib (the real reader does the work)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        real = _recovery._load

        def load(path: str, name: str) -> Manifest:
            self.names.append(name)
            return real(path, name)

        monkeypatch.setattr(_recovery, "_load", load)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> _Loads:
    # Every file gets its stamp (none is "racy"): the stamp check itself is what is tested.
    monkeypatch.setattr(_index, "_RACY_NS", -(10**15))
    return _Loads(monkeypatch)


async def _closed_library(tmp_path: Path) -> tuple[Path, ContentLibrary]:
    """CS100026.1 and .2 (FILES, then one more file) and CS100027.1, closed cleanly."""
    root = tmp_path / "lib"
    lib = await ContentLibrary.open(root)
    src = make_tree(tmp_path / "src", FILES)
    await lib.snapshot("CS100026", src, "CS100026.1")
    (src / "more.txt").write_bytes(b"more\n")
    await lib.snapshot("CS100026", src, "CS100026.2")
    await lib.snapshot("CS100027", make_tree(tmp_path / "o", {"o": b"other"}), "CS100027.1")
    await lib.aclose()
    return root, lib


def _replace(path: Path, data: bytes) -> None:
    """Write path anew (a new inode): what a restore from a backup or an editor does."""
    tmp = path.with_name(".replacing")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def test_a_clean_close_lets_the_next_open_read_no_manifest(
    tmp_path: Path, loads: _Loads
) -> None:
    root, before = await _closed_library(tmp_path)
    assert (root / _index.NAME).exists()

    lib = await ContentLibrary.open(root)
    assert loads.names == []
    assert not (root / _index.NAME).exists()  # taken: a crash from here is fully checked
    for cid in ("CS100026.1", "CS100026.2", "CS100027.1"):
        assert lib.manifest(cid) == before.manifest(cid)
    assert lib.content_ids("CS100026") == ["CS100026.1", "CS100026.2"]
    assert lib.references(sha(FILES["readme.txt"])) == 2
    assert await lib.collect_garbage(if_needed=True) == 0
    assert (await lib.verify("CS100026.2")).ok


async def test_a_library_never_closed_is_fully_checked_and_collected(
    tmp_path: Path, loads: _Loads
) -> None:
    root, _ = await _closed_library(tmp_path)
    lib = await ContentLibrary.open(root)
    await lib.add_file_stream(sha(b"orphan"), 6, chunks(b"orphan", 3))  # then a kill

    again = await ContentLibrary.open(root)
    assert sorted(loads.names) == ["CS100026.1.json", "CS100026.2.json", "CS100027.1.json"]
    assert await again.collect_garbage(if_needed=True) == 1
    assert not again.has_file(sha(b"orphan"))


async def test_a_manifest_replaced_while_closed_is_checked_and_quarantined(
    tmp_path: Path, loads: _Loads
) -> None:
    root, _ = await _closed_library(tmp_path)
    path = root / "DataLib" / "CS100026.2.json"
    good = path.read_bytes()
    _replace(path, good[: len(good) // 2])
    stored = listing(root / "FileLib")

    lib = await ContentLibrary.open(root)
    assert loads.names == ["CS100026.2.json"]  # only the changed one is read
    [damaged] = lib.damaged
    assert damaged.content_id == "CS100026.2"
    assert "does not decode" in damaged.reason
    assert lib.content_ids("CS100026") == ["CS100026.1"]
    assert (root / "PkgLib" / "CS100026.json").read_bytes() == (
        b'{"package_id":"CS100026","content_ids":["CS100026.1"]}'
    )
    # Damage: which files it named is unknown, so nothing is collected.
    assert await lib.collect_garbage(if_needed=True) == 0
    assert listing(root / "FileLib") == stored


async def test_a_manifest_replaced_by_a_good_copy_is_read_and_kept(
    tmp_path: Path, loads: _Loads
) -> None:
    root, before = await _closed_library(tmp_path)
    path = root / "DataLib" / "CS100027.1.json"
    _replace(path, path.read_bytes())  # same bytes, new file

    lib = await ContentLibrary.open(root)
    assert loads.names == ["CS100027.1.json"]
    assert lib.damaged == ()
    assert lib.manifest("CS100027.1") == before.manifest("CS100027.1")
    assert await lib.collect_garbage(if_needed=True) == 0


async def test_a_manifest_deleted_while_closed_leaves_garbage_that_is_collected(
    tmp_path: Path, loads: _Loads
) -> None:
    root, _ = await _closed_library(tmp_path)
    (root / "DataLib" / "CS100027.1.json").unlink()

    lib = await ContentLibrary.open(root)
    assert loads.names == []
    assert lib.content_ids("CS100027") == []
    assert not (root / "PkgLib" / "CS100027.json").exists()
    assert await lib.collect_garbage(if_needed=True) == 1  # the file only it named
    assert not lib.has_file(sha(b"other"))


async def test_a_manifest_added_while_closed_is_read_and_checked(
    tmp_path: Path, loads: _Loads
) -> None:
    root, before = await _closed_library(tmp_path)
    datalib = root / "DataLib"
    m = before.manifest("CS100027.1")
    data = (datalib / "CS100027.1.json").read_bytes()
    data = data.replace(b"CS100027.1", b"CS100027.2").replace(b'"version":1', b'"version":2')
    (datalib / "CS100027.2.json").write_bytes(data)
    (datalib / "CS100028.1.json").write_bytes(b"{")

    lib = await ContentLibrary.open(root)
    assert sorted(loads.names) == ["CS100027.2.json", "CS100028.1.json"]
    assert lib.content_ids("CS100027") == ["CS100027.1", "CS100027.2"]
    assert lib.manifest("CS100027.2").files == m.files
    assert [d.name for d in lib.damaged] == ["CS100028.1.json"]
    assert lib.damaged[0].reason.startswith("does not decode")
    assert (root / "PkgLib" / "CS100027.json").exists()


async def test_close_drops_stored_files_no_version_names(tmp_path: Path, loads: _Loads) -> None:
    root, _ = await _closed_library(tmp_path)
    lib = await ContentLibrary.open(root)
    await lib.add_file_stream(sha(b"orphan"), 6, chunks(b"orphan", 3))  # a receive stopped
    held = sha(FILES["setup.exe"])
    assert lib.hold([held]) == [True]
    await lib.remove_content("CS100026.1")  # readme and setup.exe stay: .2 names them
    await lib.aclose()
    assert not lib.has_file(sha(b"orphan"))

    again = await ContentLibrary.open(root)
    assert loads.names == []
    assert again.content_ids("CS100026") == ["CS100026.2"]
    assert await again.collect_garbage() == 0  # a full scan finds nothing either
    assert again.has_file(held)


async def test_a_closed_library_refuses_changes(tmp_path: Path) -> None:
    _, lib = await _closed_library(tmp_path)
    with pytest.raises(ContentLibError, match="closed"):
        await lib.snapshot("CS100029", make_tree(tmp_path / "n", {"n": b"n"}), "CS100029.1")
    with pytest.raises(ContentLibError, match="closed"):
        await lib.remove_content("CS100027.1")
    assert lib.content_ids("CS100027") == ["CS100027.1"]  # reading still works


async def test_an_unreadable_index_means_a_full_check(tmp_path: Path, loads: _Loads) -> None:
    root, _ = await _closed_library(tmp_path)
    (root / _index.NAME).write_bytes(b"\x00garbage")
    lib = await ContentLibrary.open(root)
    assert len(loads.names) == 3
    assert lib.content_ids("CS100026") == ["CS100026.1", "CS100026.2"]
    assert not (root / _index.NAME).exists()


async def test_a_file_changed_just_before_the_close_is_read_again(tmp_path: Path) -> None:
    # No stamp for a file the coarse filesystem clock could not tell from a later write.
    root = tmp_path / "lib"
    lib = await ContentLibrary.open(root)
    await lib.snapshot("CS100026", make_tree(tmp_path / "src", FILES), "CS100026.1")
    await lib.aclose()
    taken = _index.take(root)
    assert taken is not None
    [(manifest, stamp)] = list(_index.entries(taken))
    assert manifest.content_id == "CS100026.1"
    assert stamp is None
