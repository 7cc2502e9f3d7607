"""Storage, snapshot, manifests, references, verify, extract, streams."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from actors.testing import read_tree
from contentlib import (
    ContentLibError,
    ContentLibrary,
    ContentNotFound,
    FileEntry,
    HashMismatch,
    Manifest,
    UnsafePath,
    _library,
)
from contentlib._model import content_hash
from contentlib._paths import check_manifest
from tests.contentlib.contentlib_helpers import chunks, listing, make_tree, sha

FILES = {
    "setup.exe": b"MZ" + os.urandom(300_000),
    "readme.txt": b"hello\n",
    "sub/dir/data.bin": os.urandom(5000),
    "sub/copy.txt": b"hello\n",  # same bytes as readme.txt: stored once
    "empty.dat": b"",
}


@pytest.fixture(params=["small", "per-file"])
def ingest_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a snapshot takes files in: a small source in one worker call, a big one
    a worker call per file."""
    if request.param == "per-file":
        monkeypatch.setattr(_library, "SMALL_SOURCE", -1)
    return str(request.param)


@pytest.mark.usefixtures("ingest_path")
async def test_snapshot_layout_manifest_and_extract(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", FILES)
    os.chmod(src / "setup.exe", 0o755)
    lib = ContentLibrary(tmp_path / "lib")
    rep = await lib.snapshot("CS100026", src, "CS100026.1")
    m = rep.manifest
    assert (m.content_id, m.package_id, m.version) == ("CS100026.1", "CS100026", 1)
    assert [f.path for f in m.files] == sorted(FILES)
    assert rep.bytes_read == sum(len(v) for v in FILES.values())
    assert rep.bytes_stored == rep.bytes_read - len(b"hello\n")
    assert rep.files_shared == 1
    for rel, data in FILES.items():
        path = tmp_path / "lib" / "FileLib" / sha(data)[:4] / sha(data)
        assert path.read_bytes() == data, rel
    assert (tmp_path / "lib" / "DataLib" / "CS100026.1.json").exists()
    assert lib.content_ids("CS100026") == ["CS100026.1"]
    # a fresh library object sees the same state from disk
    again = ContentLibrary(tmp_path / "lib")
    assert again.manifest("CS100026.1") == m
    assert again.references(sha(b"hello\n")) == 1
    out = tmp_path / "out"
    await again.extract("CS100026.1", out)
    assert read_tree(out) == FILES
    assert os.stat(out / "setup.exe").st_mode & 0o777 == 0o755
    assert os.stat(out / "readme.txt").st_mode & 0o777 == 0o644


async def test_content_hash_is_deterministic_and_content_only(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", FILES)
    lib = ContentLibrary(tmp_path / "lib")
    a = (await lib.snapshot("CS100026", src, "CS100026.1")).manifest
    b = (await lib.snapshot("CS100027", src, "CS100027.1")).manifest
    assert a.content_hash == b.content_hash
    (src / "readme.txt").write_bytes(b"hello!\n")
    c = (await lib.snapshot("CS100026", src, "CS100026.2")).manifest
    assert c.content_hash != a.content_hash


async def test_single_instance_and_removal_by_reference(tmp_path: Path) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    shared, own1, own2 = os.urandom(4096), os.urandom(100), os.urandom(200)
    src1 = make_tree(tmp_path / "a", {"s.bin": shared, "o.bin": own1})
    src2 = make_tree(tmp_path / "b", {"x/s.bin": shared, "o.bin": own2})
    await lib.snapshot("CS100001", src1, "CS100001.1")
    rep2 = await lib.snapshot("CS100002", src2, "CS100002.1")
    assert rep2.files_shared == 1
    assert lib.references(sha(shared)) == 2
    await lib.remove_content("CS100001.1")
    assert lib.has_file(sha(shared))
    assert not lib.has_file(sha(own1))
    assert lib.content_ids("CS100001") == []
    with pytest.raises(ContentNotFound, match=r"CS100001\.1"):
        lib.manifest("CS100001.1")
    await lib.remove_content("CS100002.1")
    assert not any((tmp_path / "lib" / "FileLib").glob("*/*"))


@pytest.mark.usefixtures("ingest_path")
async def test_update_snapshot_shares_unchanged_files(tmp_path: Path) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    src = make_tree(tmp_path / "src", FILES)
    await lib.snapshot("CS100026", src, "CS100026.1")
    (src / "sub" / "dir" / "data.bin").write_bytes(b"changed")
    rep = await lib.snapshot("CS100026", src, "CS100026.2")
    assert rep.bytes_stored == len(b"changed")
    assert rep.files_shared == len(FILES) - 1
    assert lib.content_ids("CS100026") == ["CS100026.1", "CS100026.2"]
    with pytest.raises(ContentLibError, match="already exists"):
        await lib.snapshot("CS100026", src, "CS100026.2")


@pytest.mark.usefixtures("ingest_path")
async def test_concurrent_snapshots_of_the_same_files(tmp_path: Path) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    files = {f"f{i}.bin": os.urandom(1000 + i) for i in range(20)}
    srcs = [make_tree(tmp_path / f"s{k}", files) for k in range(4)]
    async with anyio.create_task_group() as tg:
        for k, s in enumerate(srcs):
            tg.start_soon(lib.snapshot, f"CS10000{k}", s, f"CS10000{k}.1")
    stored = list((tmp_path / "lib" / "FileLib").glob("*/*"))
    assert len(stored) == len(files)
    assert not list((tmp_path / "lib" / "tmp").iterdir())
    for k in range(4):
        assert (await lib.verify(f"CS10000{k}.1")).ok


async def test_verify_reports_missing_and_corrupt(tmp_path: Path) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    src = make_tree(tmp_path / "src", FILES)
    await lib.snapshot("CS100026", src, "CS100026.1")
    lib.file_path(sha(FILES["setup.exe"])).unlink()
    lib.file_path(sha(FILES["sub/dir/data.bin"])).write_bytes(b"rot")
    rep = await lib.verify("CS100026.1")
    assert rep.missing == ("setup.exe",)
    assert rep.corrupt == ("sub/dir/data.bin",)
    assert not rep.ok


@pytest.mark.parametrize("kind", ["file_link", "dir_link", "fifo"])
async def test_snapshot_refuses_links_and_special_files(tmp_path: Path, kind: str) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": b"a"})
    outside = make_tree(tmp_path / "outside", {"secret": b"s"})
    if kind == "file_link":
        (src / "link").symlink_to(outside / "secret")
    elif kind == "dir_link":
        (src / "link").symlink_to(outside)
    else:
        os.mkfifo(src / "link")
    lib = ContentLibrary(tmp_path / "lib")
    before = listing(tmp_path / "lib")
    with pytest.raises(UnsafePath, match="link"):
        await lib.snapshot("CS100026", src, "CS100026.1")
    assert listing(tmp_path / "lib") == before


@pytest.mark.parametrize("bad", ["../x.1", "/abs.1", "CS1", "a/b.1", "CS1.x"])
async def test_bad_content_ids_are_refused(tmp_path: Path, bad: str) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    src = make_tree(tmp_path / "src", {"a": b"a"})
    with pytest.raises(UnsafePath):
        await lib.snapshot("CS100026", src, bad)


async def test_add_file_stream_verifies_before_visible(tmp_path: Path) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    data = os.urandom(100_000)
    await lib.add_file_stream(sha(data), len(data), chunks(data, 7000))
    assert lib.file_path(sha(data)).read_bytes() == data
    bad = bytearray(data)
    bad[5] ^= 1
    other = sha(data + b"x")  # never the stored file's hash (random data may end in "x")
    with pytest.raises(HashMismatch, match=other):
        await lib.add_file_stream(other, len(data), chunks(bytes(bad), 7000))
    with pytest.raises(HashMismatch, match="more than"):
        await lib.add_file_stream(other, 10, chunks(bytes(bad), 7000))
    assert not lib.has_file(other)
    assert not list((tmp_path / "lib" / "tmp").iterdir())


async def test_add_file_from_path_and_add_content(tmp_path: Path) -> None:
    src_lib = ContentLibrary(tmp_path / "site")
    src = make_tree(tmp_path / "src", FILES)
    m = (await src_lib.snapshot("CS100026", src, "CS100026.1")).manifest
    dp = ContentLibrary(tmp_path / "dp")
    with pytest.raises(ContentLibError, match=r"setup\.exe"):
        await dp.add_content(m)
    for f in m.files:
        await dp.add_file_from_path(f.sha256, f.size, src_lib.file_path(f.sha256))
    with pytest.raises(HashMismatch):
        await dp.add_file_from_path(sha(b"zz"), 2, src / "readme.txt")
    await dp.add_content(m)
    await dp.add_content(m)  # idempotent
    assert dp.manifest("CS100026.1") == m
    assert (await dp.verify("CS100026.1")).ok


async def test_read_stream_ranges(tmp_path: Path) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    data = os.urandom(10_000)
    await lib.add_file_stream(sha(data), len(data), chunks(data, 4096))
    got = [c async for c in lib.read_stream(sha(data), chunk_size=3000)]
    assert [len(c) for c in got] == [3000, 3000, 3000, 1000]
    assert b"".join(got) == data
    part = b"".join([c async for c in lib.read_stream(sha(data), 1000, offset=2500, length=3500)])
    assert part == data[2500:6000]
    with pytest.raises(ContentNotFound):
        [c async for c in lib.read_stream(sha(b"nope"))]


async def test_garbage_collection_removes_only_unreferenced(tmp_path: Path) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    src = make_tree(tmp_path / "src", {"a": b"kept"})
    await lib.snapshot("CS100026", src, "CS100026.1")
    await lib.add_file_stream(sha(b"orphan"), 6, chunks(b"orphan", 3))
    assert await lib.collect_garbage() == 1
    assert lib.has_file(sha(b"kept"))
    assert not lib.has_file(sha(b"orphan"))


async def test_add_file_from_path_move_and_replace(tmp_path: Path) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    data = os.urandom(20_000)
    staged = tmp_path / "staged.tmp"
    staged.write_bytes(data)
    await lib.add_file_from_path(sha(data), len(data), staged, move=True)
    assert not staged.exists()
    assert lib.file_path(sha(data)).read_bytes() == data
    lib.file_path(sha(data)).write_bytes(b"damaged")  # a redistribute repairs it
    staged.write_bytes(data)
    await lib.add_file_from_path(sha(data), len(data), staged, move=True, replace=True)
    assert lib.file_path(sha(data)).read_bytes() == data
    staged.write_bytes(b"wrong")
    with pytest.raises(HashMismatch):
        await lib.add_file_from_path(sha(data), len(data), staged, move=True, replace=True)
    assert lib.file_path(sha(data)).read_bytes() == data
    assert not list((tmp_path / "lib" / "tmp").iterdir())
    (tmp_path / "link").symlink_to(lib.file_path(sha(data)))
    with pytest.raises(UnsafePath):
        await lib.add_file_from_path(sha(data), len(data), tmp_path / "link", move=True)


async def test_add_file_from_path_verified_move_checks_size_not_bytes(tmp_path: Path) -> None:
    """A download hashed as it was written is moved in without being read again: its size
    is still checked; a copy (no move) is hashed whatever the caller says."""
    lib = ContentLibrary(tmp_path / "lib")
    data = os.urandom(30_000)
    staged = tmp_path / "staged.part"
    staged.write_bytes(data)
    with pytest.raises(HashMismatch):
        await lib.add_file_from_path(sha(data), len(data) + 1, staged, move=True, verified=True)
    assert not lib.has_file(sha(data))
    assert not list((tmp_path / "lib" / "tmp").iterdir())
    staged.write_bytes(data)
    await lib.add_file_from_path(sha(data), len(data), staged, move=True, verified=True)
    assert lib.file_path(sha(data)).read_bytes() == data
    # the caller's word is the hash: bytes it verified are stored under it unread
    other = os.urandom(30_000)
    staged.write_bytes(other)
    await lib.add_file_from_path(sha(data[:-1]), len(other), staged, move=True, verified=True)
    assert lib.file_path(sha(data[:-1])).read_bytes() == other
    staged.write_bytes(other)
    with pytest.raises(HashMismatch):  # no move: hashed all the same
        await lib.add_file_from_path(sha(data), len(other), staged, verified=True)


async def test_empty_folders_are_content_and_extract_rebuilds_them(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"bin/app": b"x"})
    (src / "logs").mkdir()
    (src / "plugins" / "none").mkdir(parents=True)
    (src / "bin" / "cache").mkdir()
    lib = ContentLibrary(tmp_path / "lib")
    m1 = (await lib.snapshot("CS100026", src, "CS100026.1")).manifest
    assert m1.dirs == ("bin/cache", "logs", "plugins/none")
    out = tmp_path / "out"
    await ContentLibrary(tmp_path / "lib").extract("CS100026.1", out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "bin", "bin/app", "bin/cache", "logs", "plugins", "plugins/none",
    ]  # fmt: skip
    (src / "logs").rmdir()  # an empty folder gone is a change of content
    m2 = (await lib.snapshot("CS100026", src, "CS100026.2")).manifest
    assert m2.dirs == ("bin/cache", "plugins/none")
    assert m2.content_hash != m1.content_hash


async def test_a_manifest_without_folders_keeps_its_content_hash(tmp_path: Path) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    m = (await lib.snapshot("CS100026", make_tree(tmp_path / "src", FILES), "CS100026.1")).manifest
    assert m.dirs == ()
    assert content_hash(m.files) == content_hash(m.files, ()) == m.content_hash


@pytest.mark.parametrize(
    ("dirs", "problem"),
    [
        (("../escape",), "escape"),
        (("readme.txt",), "is a file or under one"),
        (("readme.txt/below",), "is a file or under one"),
        (("logs", "logs"), "listed twice"),
    ],
)
def test_a_manifest_with_a_bad_folder_is_refused(dirs: tuple[str, ...], problem: str) -> None:
    files = (FileEntry("readme.txt", 6, sha(b"hello\n")),)
    m = Manifest("CS100026.1", "CS100026", 1, files, content_hash(files, dirs), dirs)
    with pytest.raises(UnsafePath, match=problem if problem != "escape" else None):
        check_manifest(m)


@pytest.mark.usefixtures("ingest_path")
async def test_a_signed_snapshot_answers_sign_content_as_a_reopen_computes_it(
    tmp_path: Path,
) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    src = make_tree(tmp_path / "src", FILES)
    await lib.snapshot("CS100026", src, "CS100026.1", sign=True)
    signed = await lib.sign_content("CS100026.1")
    sigs = sorted(p.stem for p in (tmp_path / "lib" / "SigLib").glob("*/*.sig"))
    assert sigs == sorted({f.sha256 for f in lib.manifest("CS100026.1").files})
    for sig in (tmp_path / "lib" / "SigLib").glob("*/*.sig"):
        sig.unlink()  # computed again from the stored files
    assert await ContentLibrary(tmp_path / "lib").sign_content("CS100026.1") == signed
    (src / "readme.txt").write_bytes(b"changed\n")
    await lib.snapshot("CS100026", src, "CS100026.2", sign=True)  # unchanged files: stored
    again = await ContentLibrary(tmp_path / "lib").sign_content("CS100026.2")
    assert await lib.sign_content("CS100026.2") == again
