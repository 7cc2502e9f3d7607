"""Opening a library: manifests checked, the damaged quarantined, crash leftovers cleared."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from contentlib import ContentLibrary, ContentNotFound, DamagedManifest, Manifest
from contentlib._model import content_hash
from tests.contentlib.contentlib_helpers import chunks, listing, make_tree, sha

FILES = {
    "setup.exe": os.urandom(50_000),
    "readme.txt": b"hello\n",
    "sub/data.bin": os.urandom(5000),
}


def _truncate(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def _drop_entry(raw: bytes) -> bytes:
    m = msgspec.json.decode(raw, type=Manifest)
    return msgspec.json.encode(msgspec.structs.replace(m, files=m.files[1:]))


def _change_hash(raw: bytes) -> bytes:
    m = msgspec.json.decode(raw, type=Manifest)
    first = msgspec.structs.replace(m.files[0], sha256=sha(b"something else"))
    return msgspec.json.encode(msgspec.structs.replace(m, files=(first, *m.files[1:])))


def _unsafe_path(raw: bytes) -> bytes:
    # A consistent content hash: only the path check can refuse it.
    m = msgspec.json.decode(raw, type=Manifest)
    files = (msgspec.structs.replace(m.files[0], path="../escape"), *m.files[1:])
    return msgspec.json.encode(
        msgspec.structs.replace(m, files=files, content_hash=content_hash(files))
    )


DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (_truncate, "does not decode"),
    "entry dropped": (_drop_entry, "content hash does not match"),
    "hash changed": (_change_hash, "content hash does not match"),
    "unsafe path": (_unsafe_path, "unsafe path"),
}

Opener = Callable[[Path], Awaitable[ContentLibrary]]


async def _open_sync(root: Path) -> ContentLibrary:
    return ContentLibrary(root)


async def _open_async(root: Path) -> ContentLibrary:
    return await ContentLibrary.open(root)


OPENERS = pytest.mark.parametrize("opener", [_open_sync, _open_async], ids=["sync", "async"])


async def _library_with_orphan(tmp_path: Path) -> tuple[ContentLibrary, Path]:
    """CS100026.1 (FILES) and CS100027.1 (one file), and one unreferenced file."""
    lib = await ContentLibrary.open(tmp_path / "lib")
    await lib.snapshot("CS100026", make_tree(tmp_path / "src", FILES), "CS100026.1")
    await lib.snapshot("CS100027", make_tree(tmp_path / "other", {"o": b"other"}), "CS100027.1")
    await lib.add_file_stream(sha(b"orphan"), 6, chunks(b"orphan", 3))
    return lib, tmp_path / "lib" / "DataLib" / "CS100026.1.json"


@OPENERS
@pytest.mark.parametrize("kind", list(DAMAGE))
async def test_a_damaged_manifest_is_quarantined_and_nothing_is_deleted(
    tmp_path: Path, kind: str, opener: Opener
) -> None:
    _, path = await _library_with_orphan(tmp_path)
    damage, reason = DAMAGE[kind]
    bad = damage(path.read_bytes())
    path.write_bytes(bad)
    filelib = tmp_path / "lib" / "FileLib"
    stored = listing(filelib)

    lib = await opener(tmp_path / "lib")
    [damaged] = lib.damaged
    assert isinstance(damaged, DamagedManifest)
    assert (damaged.name, damaged.content_id) == ("CS100026.1.json", "CS100026.1")
    assert reason in damaged.reason
    kept = tmp_path / "lib" / "DataLib" / "quarantine" / path.name
    assert damaged.path == str(kept)
    assert kept.read_bytes() == bad  # kept for a human
    assert not path.exists()
    with pytest.raises(ContentNotFound):
        lib.manifest("CS100026.1")
    assert lib.content_ids("CS100026") == []
    assert not (tmp_path / "lib" / "PkgLib" / "CS100026.json").exists()
    assert lib.content_ids("CS100027") == ["CS100027.1"]  # the others open as before

    # Which files the damaged manifest referenced is unknown: nothing is deleted.
    assert await lib.collect_garbage() == 0
    await lib.remove_content("CS100027.1")
    assert listing(filelib) == stored

    # Still damaged on the next open, with its reason.
    again = await opener(tmp_path / "lib")
    assert again.damaged == lib.damaged
    assert await again.collect_garbage() == 0

    # Once a human deletes it, the garbage collector runs again.
    kept.unlink()
    cleared = await opener(tmp_path / "lib")
    assert cleared.damaged == ()
    assert await cleared.collect_garbage() == len(FILES) + 2  # and other's file, the orphan


async def test_a_manifest_under_another_name_is_quarantined(tmp_path: Path) -> None:
    _, path = await _library_with_orphan(tmp_path)
    path.rename(path.with_name("CS100026.2.json"))
    lib = await ContentLibrary.open(tmp_path / "lib")
    [damaged] = lib.damaged
    assert damaged.name == "CS100026.2.json"
    assert "not its content id 'CS100026.1'" in damaged.reason
    assert lib.content_ids("CS100026") == []
    assert await lib.collect_garbage() == 0


async def test_quarantine_keeps_both_of_two_damaged_files_of_one_name(tmp_path: Path) -> None:
    _, path = await _library_with_orphan(tmp_path)
    good = path.read_bytes()
    path.write_bytes(b"{")
    await ContentLibrary.open(tmp_path / "lib")
    path.write_bytes(good[:-1])  # damaged again under the same name
    lib = await ContentLibrary.open(tmp_path / "lib")
    kept = [tmp_path / "lib" / "DataLib" / "quarantine" / Path(d.path).name for d in lib.damaged]
    assert sorted(p.read_bytes() for p in kept) == sorted([b"{", good[:-1]])
    assert {d.name for d in lib.damaged} == {"CS100026.1.json"}


async def test_crash_leftovers_are_cleared_on_open(tmp_path: Path) -> None:
    lib = await ContentLibrary.open(tmp_path / "lib")
    src = make_tree(tmp_path / "src", FILES)
    await lib.snapshot("CS100026", src, "CS100026.1")
    await lib.snapshot("CS100026", src, "CS100026.2")
    await lib.snapshot("CS100027", src, "CS100027.1")
    await lib.signature(sha(FILES["setup.exe"]))
    root = tmp_path / "lib"
    # What kills leave: 0-byte temp files beside atomic writes, a staging folder in tmp/,
    # a manifest removed before its PkgLib was rewritten, a package with no manifest left,
    # a torn PkgLib file.
    sig_folder = next((root / "SigLib").iterdir())
    stale = [root / d / f".{uuid.uuid4().hex}.tmp" for d in ("DataLib", "PkgLib", "SigLib")]
    stale += [sig_folder / f".{uuid.uuid4().hex}.tmp", root / "tmp" / "x"]
    for p in stale:
        p.touch()
    (root / "tmp" / f".stage-{uuid.uuid4().hex}.tmp" / "f").mkdir(parents=True)
    (root / "DataLib" / "CS100026.2.json").unlink()
    (root / "PkgLib" / "CS100099.json").write_bytes(b'{"package_id":"CS100099","content_ids":[]}')
    (root / "PkgLib" / "CS100027.json").write_bytes(b'{"package_id":"CS1000')
    (root / "DataLib" / "notes.txt").write_bytes(b"not ours")

    again = await ContentLibrary.open(root)
    assert again.damaged == ()
    assert not any(p.exists() for p in stale)
    assert list((root / "tmp").iterdir()) == []
    assert sorted(p.name for p in (root / "PkgLib").iterdir()) == [
        "CS100026.json",
        "CS100027.json",
    ]
    for pkg in ("CS100026", "CS100027"):
        assert msgspec.json.decode((root / "PkgLib" / f"{pkg}.json").read_bytes()) == {
            "package_id": pkg,
            "content_ids": [f"{pkg}.1"],
        }
    assert (root / "DataLib" / "notes.txt").exists()  # only names the library makes
    assert again.content_ids("CS100026") == ["CS100026.1"]


async def test_adding_the_content_again_resolves_the_damage(tmp_path: Path) -> None:
    lib, path = await _library_with_orphan(tmp_path)
    good = lib.manifest("CS100026.1")
    path.write_bytes(_drop_entry(path.read_bytes()))
    damaged = await ContentLibrary.open(tmp_path / "lib")
    assert [d.content_id for d in damaged.damaged] == ["CS100026.1"]
    await damaged.add_content(good)  # a redistribute: its files are all still there
    assert damaged.damaged == ()
    assert await damaged.collect_garbage() == 1  # the orphan only
    assert (await damaged.verify("CS100026.1")).ok
    again = await ContentLibrary.open(tmp_path / "lib")
    assert again.damaged == ()
    assert len(list((tmp_path / "lib" / "DataLib" / "quarantine").glob("CS100026.1.json"))) == 1
