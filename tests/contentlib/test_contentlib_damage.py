"""Damaged stored files: verified extract, verify_file, repair_file, updates over damage."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from actors.testing import read_tree
from contentlib import (
    ContentLibError,
    ContentLibrary,
    ContentNotFound,
    HashMismatch,
    Manifest,
    TargetNotEmpty,
)
from tests.contentlib.contentlib_helpers import listing, make_tree, sha

FILES = {
    "setup.exe": os.urandom(300_000),
    "readme.txt": b"hello\n",
    "sub/dir/data.bin": os.urandom(5000),
    "empty.dat": b"",
}


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


DAMAGE: dict[str, tuple[Callable[[Path], None], type[ContentLibError], str]] = {
    "bit flipped": (_flip, HashMismatch, "damaged"),
    "truncated": (_truncate, HashMismatch, "damaged"),
    "deleted": (Path.unlink, ContentNotFound, "missing"),
}


async def _stored(tmp_path: Path) -> tuple[ContentLibrary, Manifest]:
    lib = await ContentLibrary.open(tmp_path / "lib")
    src = make_tree(tmp_path / "src", FILES)
    return lib, (await lib.snapshot("CS100026", src, "CS100026.1")).manifest


@pytest.mark.parametrize("kind", list(DAMAGE))
async def test_extract_of_a_damaged_file_raises_and_leaves_nothing(
    tmp_path: Path, kind: str
) -> None:
    lib, _ = await _stored(tmp_path)
    damage, error, word = DAMAGE[kind]
    damage(lib.file_path(sha(FILES["setup.exe"])))
    out_parent = tmp_path / "outs"
    out_parent.mkdir()
    with pytest.raises(error, match=rf"'setup\.exe'.*{sha(FILES['setup.exe'])}") as caught:
        await lib.extract("CS100026.1", out_parent / "out")
    assert word in str(caught.value)
    assert list(out_parent.iterdir()) == []  # no partial output, no temp folder


async def test_extract_names_the_path_and_the_expected_hash(tmp_path: Path) -> None:
    lib, _ = await _stored(tmp_path)
    _flip(lib.file_path(sha(FILES["sub/dir/data.bin"])))
    _truncate(lib.file_path(sha(FILES["setup.exe"])))  # two failing workers: one error
    with pytest.raises(HashMismatch) as caught:
        await lib.extract("CS100026.1", tmp_path / "out")
    message = str(caught.value)
    assert ("'setup.exe'" in message and sha(FILES["setup.exe"]) in message) or (
        "'sub/dir/data.bin'" in message and sha(FILES["sub/dir/data.bin"]) in message
    )
    assert not (tmp_path / "out").exists()


async def test_extract_refuses_a_target_that_is_not_an_empty_folder(tmp_path: Path) -> None:
    lib, _ = await _stored(tmp_path)
    full = make_tree(tmp_path / "full", {"stale.txt": b"old"})
    before = listing(tmp_path)
    with pytest.raises(TargetNotEmpty, match="full"):
        await lib.extract("CS100026.1", full)
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(TargetNotEmpty):
        await lib.extract("CS100026.1", tmp_path / "file")
    (tmp_path / "file").unlink()
    assert listing(tmp_path) == before
    (tmp_path / "empty").mkdir()
    await lib.extract("CS100026.1", tmp_path / "empty")
    assert read_tree(tmp_path / "empty") == FILES
    await lib.extract("CS100026.1", tmp_path / "new" / "deep")
    assert read_tree(tmp_path / "new" / "deep") == FILES


async def test_verify_file(tmp_path: Path) -> None:
    lib, _ = await _stored(tmp_path)
    assert await lib.verify_file(sha(FILES["setup.exe"])) == "ok"
    _flip(lib.file_path(sha(FILES["setup.exe"])))
    assert await lib.verify_file(sha(FILES["setup.exe"])) == "corrupt"
    lib.file_path(sha(FILES["readme.txt"])).unlink()
    assert await lib.verify_file(sha(FILES["readme.txt"])) == "missing"


async def test_repair_file_from_a_source_that_still_matches(tmp_path: Path) -> None:
    lib, _ = await _stored(tmp_path)
    data = FILES["setup.exe"]
    stored = lib.file_path(sha(data))
    _truncate(stored)
    damaged_sig = await lib.signature(sha(data))  # cached from the damaged copy
    assert damaged_sig.size != len(data)
    src = tmp_path / "src" / "setup.exe"
    assert await lib.repair_file(sha(data), len(data), src)
    assert stored.read_bytes() == data
    assert (await lib.verify("CS100026.1")).ok
    assert (await lib.signature(sha(data))).size == len(data)  # the stale one was dropped


@pytest.mark.parametrize("source", ["changed", "missing", "symlink"])
async def test_repair_file_from_a_source_that_differs_changes_nothing(
    tmp_path: Path, source: str
) -> None:
    lib, _ = await _stored(tmp_path)
    data = FILES["setup.exe"]
    _flip(lib.file_path(sha(data)))
    src = tmp_path / "src" / "setup.exe"
    if source == "changed":
        src.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # the last byte, always other
    elif source == "missing":
        src.unlink()
    else:
        src.unlink()
        src.symlink_to(tmp_path / "src" / "readme.txt")
    before = listing(tmp_path / "lib")
    damaged = lib.file_path(sha(data)).read_bytes()
    assert not await lib.repair_file(sha(data), len(data), src)
    assert listing(tmp_path / "lib") == before
    assert lib.file_path(sha(data)).read_bytes() == damaged


async def test_update_over_a_damaged_stored_file_stores_the_good_bytes(tmp_path: Path) -> None:
    lib, _ = await _stored(tmp_path)
    data = FILES["setup.exe"]
    _truncate(lib.file_path(sha(data)))
    rep = await lib.snapshot("CS100026", tmp_path / "src", "CS100026.2")
    assert lib.file_path(sha(data)).read_bytes() == data
    assert rep.bytes_stored == len(data)
    assert (await lib.verify("CS100026.2")).ok


async def test_a_received_file_replaces_a_damaged_copy_of_another_size(tmp_path: Path) -> None:
    lib, _ = await _stored(tmp_path)
    data = FILES["sub/dir/data.bin"]
    _truncate(lib.file_path(sha(data)))
    staged = tmp_path / "staged"
    staged.write_bytes(data)
    await lib.add_file_from_path(sha(data), len(data), staged)
    assert lib.file_path(sha(data)).read_bytes() == data
