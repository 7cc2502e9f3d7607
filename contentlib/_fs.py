"""Blocking file helpers, each run in one worker thread: copy while hashing, atomic writes."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import stat
import sys
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from contentlib._errors import UnsafePath

BUF = 256 << 10  # measured: 256 KiB stays in cache (read, hash, write 2-3x faster than 4 MiB);
# still big enough for hashlib to release the GIL, so files hash in parallel


def temp_name(directory: Path, hint: str = "") -> Path:
    """A unique temp name: concurrent writers of the same hash never share a temp file."""
    return directory / f".{hint}{uuid.uuid4().hex}.tmp"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(directories: Iterable[Path]) -> None:
    for d in directories:
        fsync_dir(d)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Temp file in the same directory, fsync, rename over, fsync the directory.

    ``durable=False`` (for data rebuilt from other files on open) keeps the atomic rename
    and skips both fsyncs: a crash leaves the old or the new file, never a torn one."""
    tmp = temp_name(path.parent)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def open_read(path: Path) -> BinaryIO:
    return open(path, "rb")


def hash_file(path: Path) -> tuple[str, int]:
    with open(path, "rb", buffering=0) as f:
        return _hash_stream(f)


def hash_regular(path: Path) -> tuple[str, int]:
    """Like hash_file for a source file: refuses symlinks and special files."""
    with open(_open_regular(path), "rb", buffering=0) as f:
        return _hash_stream(f)


def _hash_stream(f: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    buf = bytearray(BUF)
    view = memoryview(buf)
    while n := f.readinto(buf):  # type: ignore[attr-defined]
        h.update(view[:n])
        size += n
    return h.hexdigest().upper(), size


class HashingWriter:
    """A new file written in pieces while hashing them; ``finish`` fsyncs and closes it."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "xb", buffering=0)  # noqa: SIM115 - closed by finish/close
        self._h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self._h.update(data)
        self._f.write(data)
        self.size += len(data)

    def finish(self) -> None:
        os.fsync(self._f.fileno())
        self._f.close()

    def close(self) -> None:
        self._f.close()

    def sha256(self) -> str:
        return self._h.hexdigest().upper()


def copy_hashing(src: Path, dst: Path, *, fsync: bool = True) -> tuple[str, int]:
    """Copy src to a new file dst and hash what was stored; returns (SHA-256, size).

    The kernel copies (copy_file_range) and the hash is taken over dst read back from the
    page cache: measured here ~2x faster than a read/hash/write loop, and the hash describes
    the stored bytes even if src changes meanwhile. src is opened with O_NOFOLLOW and must be
    a regular file, so a source cannot swap a file for a link or a device mid-snapshot.
    With ``fsync=False`` the caller makes the data durable (``sync_filesystem``).
    """
    fd = _open_regular(src)
    try:
        with open(dst, "xb+", buffering=0) as o:
            _kernel_copy(fd, o.fileno(), os.fstat(fd).st_size)
            o.seek(0)
            digest = _hash_stream(o)
            if fsync:
                os.fsync(o.fileno())
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return digest


def _kernel_copy(src: int, dst: int, size: int) -> None:
    try:
        while size > 0 and (n := os.copy_file_range(src, dst, size)):
            size -= n
        while n := os.copy_file_range(src, dst, BUF):  # the file grew meanwhile
            pass
    except (AttributeError, OSError):  # no copy_file_range here (or across filesystems)
        os.lseek(src, 0, os.SEEK_SET)
        os.lseek(dst, 0, os.SEEK_SET)
        os.ftruncate(dst, 0)
        while data := os.read(src, BUF):
            os.write(dst, data)


def sync_filesystem(path: Path) -> None:
    """Make every write on path's filesystem durable with one syncfs (os.sync elsewhere):
    one journal commit instead of one fsync per file (measured 1.5x faster on 6,669 files)."""
    libc = _libc()
    if libc is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syncfs  # noqa: B018 - probe
    except (OSError, AttributeError):
        return None
    return libc


def check_regular(path: Path) -> None:
    """UnsafePath unless path is a regular file (not a symlink, device, FIFO, ...)."""
    os.close(_open_regular(path))


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_regular(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        if os.path.islink(path):
            raise UnsafePath(f"{path} is a symlink") from e
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"{path} is not a regular file")
    return fd


def walk_source(root: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Regular files under root as (posix relpath, path, lstat), sorted.

    Rule: symlinks (to files or folders), devices, FIFOs and sockets are refused with
    UnsafePath; nothing is followed out of the source. Empty folders are not content.
    """
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"source {root} is not a folder (or is a symlink)")
    stack = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            rel = f"{prefix}{e.name}"
            est = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(est.st_mode):
                stack.append((rel + "/", Path(e.path)))
            elif stat.S_ISREG(est.st_mode):
                if "\\" in e.name:
                    raise UnsafePath(f"source file name {rel!r} contains a backslash")
                yield rel, Path(e.path), est
            else:
                kind = "a symlink" if stat.S_ISLNK(est.st_mode) else "not a regular file"
                raise UnsafePath(f"source entry {e.path} is {kind}")
