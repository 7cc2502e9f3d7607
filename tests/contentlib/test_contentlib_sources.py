"""Bad sources and a full disk: one typed error naming the file, the library unchanged."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.testing import read_tree
from contentlib import ContentLibError, ContentLibrary, SourceError, UnsafePath, _fs
from contentlib._errors import single_error
from tests.contentlib.contentlib_helpers import chunks, fill_disk, make_tree, no_space, sha

FILES = {f"d{i % 3}/f{i}.bin": os.urandom(2000 + i) for i in range(24)}


def _bad_name(src: Path) -> None:
    with open(os.path.join(os.fsencode(src), b"caf\xe9.txt"), "wb") as f:
        f.write(b"x")


def _link_outside(src: Path) -> None:
    (src / "d1" / "escape").symlink_to(src.parent / "outside")


def _fifo(src: Path) -> None:
    os.mkfifo(src / "d0" / "pipe")


def _device(src: Path) -> None:
    try:
        os.mknod(src / "d0" / "dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device needs privileges")


def _socket(src: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(src / "d2" / "sock"))
    except OSError:
        pytest.skip("path too long for a Unix socket here")
    finally:
        sock.close()


def _backslash(src: Path) -> None:
    (src / "d0" / "a\\b.txt").write_bytes(b"x")


def _backslash_folder(src: Path) -> None:
    make_tree(src / "x\\y", {"f.txt": b"x"})


def _missing(src: Path) -> None:
    shutil.rmtree(src)


BAD_SOURCES: dict[str, tuple[Callable[[Path], None], type[ContentLibError], str]] = {
    "not UTF-8": (_bad_name, UnsafePath, r"b'caf\\xe9\.txt': the name is not valid UTF-8"),
    "link outside": (_link_outside, UnsafePath, r"'d1/escape' is a symlink"),
    "fifo": (_fifo, UnsafePath, r"'d0/pipe' is a FIFO"),
    "device": (_device, UnsafePath, r"'d0/dev' is a device"),
    "socket": (_socket, UnsafePath, r"'d2/sock' is a socket"),
    "backslash": (_backslash, UnsafePath, r"'d0/a\\\\b\.txt': a backslash"),
    "backslash in a folder": (_backslash_folder, UnsafePath, r"'x\\\\y': a backslash"),
    "missing": (_missing, SourceError, r"src does not exist"),
}


async def _source_and_library(tmp_path: Path) -> tuple[Path, ContentLibrary, dict[str, bytes]]:
    """A source of FILES, an empty library, and what the library holds, to compare after."""
    src = make_tree(tmp_path / "src", FILES)
    lib = await ContentLibrary.open(tmp_path / "lib")
    return src, lib, read_tree(tmp_path / "lib")


@pytest.mark.parametrize("kind", list(BAD_SOURCES))
async def test_a_bad_source_raises_one_typed_error_and_changes_nothing(
    tmp_path: Path, kind: str
) -> None:
    make_tree(tmp_path / "outside", {"secret": b"s"})
    src, lib, before = await _source_and_library(tmp_path)
    spoil, error, message = BAD_SOURCES[kind]
    spoil(src)
    with pytest.raises(error, match=message):
        await lib.snapshot("CS100026", src, "CS100026.1")
    assert read_tree(tmp_path / "lib") == before


def _walk_then(monkeypatch: pytest.MonkeyPatch, after_listing: Callable[[], None]) -> None:
    """The source changes right after snapshot listed it, while its files are copied."""
    walk = _fs.walk_source

    def walk_then(root: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
        yield from walk(root)
        after_listing()

    monkeypatch.setattr(_fs, "walk_source", walk_then)


@pytest.mark.parametrize("gone", ["the source", "one file", "one folder"])
async def test_a_source_changing_mid_snapshot_raises_source_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gone: str
) -> None:
    src, lib, before = await _source_and_library(tmp_path)
    victim = {"the source": src, "one file": src / "d1" / "f7.bin", "one folder": src / "d2"}[gone]
    _walk_then(monkeypatch, lambda: shutil.rmtree(victim) if victim.is_dir() else victim.unlink())
    with pytest.raises(SourceError, match=r"'d\d/f\d+\.bin' does not exist") as caught:
        await lib.snapshot("CS100026", src, "CS100026.1")
    if gone == "one file":
        assert "'d1/f7.bin'" in str(caught.value)
    # Files stored before the failure went again (their empty prefix folders may stay:
    # removing one could race with a concurrent ingest placing a file in it).
    assert read_tree(tmp_path / "lib") == before


async def test_a_file_swapped_for_a_link_mid_snapshot_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path / "src", FILES)
    lib = await ContentLibrary.open(tmp_path / "lib")
    victim = src / "d0" / "f3.bin"

    def swap() -> None:
        victim.unlink()
        victim.symlink_to("/etc/passwd")

    _walk_then(monkeypatch, swap)
    with pytest.raises(UnsafePath, match=r"'d0/f3\.bin' changed while it was read"):
        await lib.snapshot("CS100026", src, "CS100026.1")


def test_a_folder_deleted_while_walked_names_it(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a/f": b"1", "b/g": b"2"})
    walk = _fs.walk_source(src)
    assert next(walk)[0] == "b/g"  # folders are walked from the last
    shutil.rmtree(src / "a")
    with pytest.raises(SourceError, match=r"'a' does not exist"):
        next(walk)


# -- a full disk ---------------------------------------------------------------------------


def _copies_fail_after(monkeypatch: pytest.MonkeyPatch, good: int) -> None:
    """The kernel copy into the library fails with ENOSPC after `good` files, half-written."""
    copy = _fs._kernel_copy
    calls = {"n": 0}

    def copy_or_fail(src: int, dst: int, size: int) -> None:
        calls["n"] += 1
        if calls["n"] > good:
            os.write(dst, b"partial")
            raise no_space()
        copy(src, dst, size)

    monkeypatch.setattr(_fs, "_kernel_copy", copy_or_fail)


@pytest.mark.parametrize("good", [0, 10])
async def test_a_full_disk_during_a_snapshot_raises_enospc_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, good: int
) -> None:
    src, lib, before = await _source_and_library(tmp_path)
    _copies_fail_after(monkeypatch, good)
    with pytest.raises(OSError) as caught:  # noqa: PT011 - the errno is what matters
        await lib.snapshot("CS100026", src, "CS100026.1")
    assert type(caught.value) is OSError
    assert caught.value.errno == errno.ENOSPC
    assert read_tree(tmp_path / "lib") == before
    monkeypatch.undo()
    await lib.snapshot("CS100026", src, "CS100026.1")  # and it works once there is room
    assert (await lib.verify("CS100026.1")).ok


@pytest.mark.parametrize("folder", ["DataLib", "PkgLib"])
async def test_a_full_disk_writing_the_manifest_commits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str
) -> None:
    src, lib, before = await _source_and_library(tmp_path)
    fill_disk(monkeypatch, tmp_path / "lib" / folder)
    with pytest.raises(OSError, match="No space left") as caught:
        await lib.snapshot("CS100026", src, "CS100026.1")
    assert caught.value.errno == errno.ENOSPC
    assert read_tree(tmp_path / "lib") == before
    assert lib.content_ids("CS100026") == []
    assert (await ContentLibrary.open(tmp_path / "lib")).content_ids("CS100026") == []


async def test_a_full_disk_receiving_a_file_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = await ContentLibrary.open(tmp_path / "lib")
    fill_disk(monkeypatch, tmp_path / "lib" / "tmp")
    data = os.urandom(10_000)
    with pytest.raises(OSError, match="No space left"):
        await lib.add_file_stream(sha(data), len(data), chunks(data, 4096))
    assert list((tmp_path / "lib" / "tmp").iterdir()) == []
    assert not lib.has_file(sha(data))


def test_single_error_unwraps_task_group_failures() -> None:
    typed, disk = UnsafePath("typed"), no_space()
    with pytest.raises(UnsafePath) as caught, single_error():
        raise ExceptionGroup("workers", [disk, ExceptionGroup("inner", [typed])])
    assert caught.value is typed
    assert isinstance(caught.value.__cause__, ExceptionGroup)  # the others stay reachable
    with pytest.raises(OSError, match="No space") as one, single_error():
        raise ExceptionGroup("workers", [disk])
    assert one.value is disk
    assert one.value.__cause__ is None
    with pytest.raises(BaseExceptionGroup), single_error():
        raise BaseExceptionGroup("workers", [disk, KeyboardInterrupt()])


async def test_symlinks_inside_the_source_are_packaged_as_what_they_name(tmp_path: Path) -> None:
    """A release's own links (``libfoo.so -> libfoo.so.1``, a linked folder) are content:
    stored at the link's path with the bytes it names, and extracted as plain files."""
    src = make_tree(tmp_path / "src", {"lib/libfoo.so.1": b"ELF...", "docs/a.txt": b"a\n"})
    (src / "lib" / "libfoo.so").symlink_to("libfoo.so.1")
    (src / "manual").symlink_to("docs")
    lib = await ContentLibrary.open(tmp_path / "lib")
    report = await lib.snapshot("PS100001", src, "PS100001.1")
    paths = {f.path: f.sha256 for f in report.manifest.files}
    assert paths["lib/libfoo.so"] == paths["lib/libfoo.so.1"] == sha(b"ELF...")
    assert paths["manual/a.txt"] == paths["docs/a.txt"]
    assert report.bytes_stored == len(b"ELF...") + len(b"a\n")  # single instance
    await lib.extract("PS100001.1", tmp_path / "out")
    out = read_tree(tmp_path / "out")
    assert out["lib/libfoo.so"] == b"ELF..."
    assert out["manual/a.txt"] == b"a\n"
    assert not (tmp_path / "out" / "manual").is_symlink()


@pytest.mark.parametrize(
    ("make_link", "problem"),
    [
        (lambda src: (src / "d" / "up").symlink_to(".."), "loops"),
        (lambda src: (src / "dangling").symlink_to("nothing-here"), "to nothing"),
        (lambda src: (src / "abs").symlink_to("/etc"), "leaves the source"),
    ],
    ids=["loop", "dangling", "absolute"],
)
async def test_a_symlink_that_loops_dangles_or_leaves_is_refused(
    tmp_path: Path, make_link: Callable[[Path], None], problem: str
) -> None:
    src = make_tree(tmp_path / "src", {"d/a.txt": b"a\n"})
    make_link(src)
    lib = await ContentLibrary.open(tmp_path / "lib")
    with pytest.raises(UnsafePath, match=problem):
        await lib.snapshot("PS100001", src, "PS100001.1")
    assert lib.content_ids("PS100001") == []
