"""Blocking file helpers, each run in one worker thread: copy while hashing, atomic writes."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import os
import re
import stat
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from contentlib._errors import SourceError, UnsafePath

BUF = 256 << 10  # measured: 256 KiB stays in cache (read, hash, write 2-3x faster than 4 MiB);
# still big enough for hashlib to release the GIL, so files hash in parallel


def temp_name(directory: Path, hint: str = "") -> Path:
    """A unique temp name: concurrent writers of the same hash never share a temp file.

    32 hex digits: a random per-process prefix (new in a forked child) and a counter, so
    a name costs no read of the random device."""
    return directory / f".{hint}{_temp_prefix}{next(_temp_counter):016x}.tmp"


def _new_temp_prefix() -> None:
    global _temp_prefix, _temp_counter
    _temp_prefix = uuid.uuid4().hex[:16]
    _temp_counter = itertools.count()


_temp_prefix = ""
_temp_counter = itertools.count()
_new_temp_prefix()
os.register_at_fork(after_in_child=_new_temp_prefix)


_TEMP = re.compile(r"\.[a-z-]*[0-9a-f]{32}\.tmp")


def is_temp_name(name: str) -> bool:
    """Whether name was made by temp_name: what a killed writer may leave behind."""
    return _TEMP.fullmatch(name) is not None


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


def write_file(path: Path, data: bytes) -> None:
    """A new or replaced file holding data, not synced (the caller syncs in batches)."""
    with open(path, "wb") as f:
        f.write(data)


def open_read(path: Path) -> BinaryIO:
    return open(path, "rb")


def read_regular(path: str | Path) -> bytes:
    """A small file's bytes; UnsafePath for a symlink or a special file."""
    fd = _open_regular(path)
    try:  # os-level reads, one for a small file: every manifest is read on every open
        return _read_all(fd)
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    want = os.fstat(fd).st_size + 1  # a short read is the end of a regular file
    first = os.read(fd, want)
    if len(first) < want:
        return first
    chunks = [first]
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def read_if_exists(path: str | Path) -> bytes | None:
    """A file's bytes, or None when it cannot be read (missing, a folder, ...)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return _read_all(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def hash_file(path: str | Path) -> tuple[str, int]:
    """The file's SHA-256 (upper-case hex, as manifests and instructions carry it) and size."""
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
    """A new file written in pieces while hashing them; ``finish`` fsyncs (``sync``) and
    closes it."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "xb", buffering=0)  # noqa: SIM115 - closed by finish/close
        self._h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self._h.update(data)
        self._f.write(data)
        self.size += len(data)

    def finish(self, *, sync: bool = True) -> None:
        if sync:
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


def _open_regular(path: str | Path) -> int:
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


Walked = tuple[str, Path, os.stat_result]


def walk_source(root: Path) -> Iterator[Walked]:
    """Regular files under root as (posix relpath, path, stat), sorted, and each empty
    folder as (relpath, path, its stat): ``stat.S_ISDIR`` tells them apart.

    Rule: a symlink that resolves inside the source is followed (a release's
    ``libfoo.so -> libfoo.so.1`` is packaged as the file it names, at the link's path; a
    linked folder's files under the link's path); one that leaves the source, dangles or
    loops, and devices, FIFOs and sockets, and names that are not UTF-8 or hold a
    backslash are refused with UnsafePath; a source or a folder that is missing, vanishes
    while walked or cannot be read raises SourceError. Both name the relative path.
    Nothing outside the source is ever read. An empty folder is content (a release may ship
    one, and extract must rebuild it); a folder holding anything is implied by what it holds.
    """
    try:
        st = os.lstat(root)
    except OSError as e:
        raise source_error(root, "", e) from e
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"source {root} is not a folder (or is a symlink)")
    real_root = os.path.realpath(root)
    # Each folder walked, by its real path, with the folders it was reached through: a
    # link back to one of them would loop.
    stack: list[tuple[str, Path, frozenset[str]]] = [("", root, frozenset({real_root}))]
    while stack:
        prefix, folder, above = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise source_error(root, prefix.rstrip("/"), e) from e
        if not entries and prefix:
            try:
                fst = os.stat(folder)
            except OSError as e:
                raise source_error(root, prefix.rstrip("/"), e) from e
            yield prefix.rstrip("/"), folder, fst
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            _check_source_name(root, rel, entry.name)
            path, est = _resolved(root, real_root, rel, Path(entry.path))
            if stat.S_ISDIR(est.st_mode):
                real = os.path.realpath(path)
                if real in above:
                    raise UnsafePath(f"source {root}: {rel!r} is a symlink that loops")
                stack.append((rel + "/", path, above | {real}))
            elif stat.S_ISREG(est.st_mode):
                yield rel, path, est
            else:
                raise UnsafePath(f"source {root}: {rel!r} is {_kind(est.st_mode)}")


def _resolved(root: Path, real_root: str, rel: str, path: Path) -> tuple[Path, os.stat_result]:
    """The entry itself, or what a symlink inside the source resolves to (its real path,
    so nothing reads through a link later)."""
    try:
        est = os.lstat(path)
    except OSError as err:
        raise source_error(root, rel, err) from err
    if not stat.S_ISLNK(est.st_mode):
        return path, est
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise UnsafePath(f"source {root}: {rel!r} is a symlink that leaves the source")
    try:
        return Path(real), os.stat(real, follow_symlinks=False)
    except OSError:
        raise UnsafePath(f"source {root}: {rel!r} is a symlink to nothing") from None


def _check_source_name(root: Path, rel: str, name: str) -> None:
    if "\\" in name:
        raise UnsafePath(f"source {root}: {rel!r}: a backslash in a name")
    if not name.isascii():
        try:
            name.encode()
        except UnicodeEncodeError:  # os.scandir gives undecodable bytes as lone surrogates
            raise UnsafePath(
                f"source {root}: {os.fsencode(rel)!r}: the name is not valid UTF-8"
            ) from None


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def source_error(root: Path, rel: str, e: OSError) -> SourceError:
    """A failure to read the source, naming what failed by its relative path."""
    what = f"source {root}: {rel!r}" if rel else f"source {root}"
    if isinstance(e, (FileNotFoundError, NotADirectoryError)):
        return SourceError(f"{what} does not exist (deleted or moved while it was read?)")
    return SourceError(f"{what} cannot be read: {e.strerror or e}")


@contextmanager
def source_file(root: Path, rel: str, path: Path) -> Iterator[None]:
    """Errors opening the source file at path, named by its relative path. Any other
    OSError (the library's own disk: ENOSPC) passes as raised."""
    try:
        yield
    except UnsafePath as e:  # swapped for a link or a special file after the walk
        raise UnsafePath(f"source {root}: {rel!r} changed while it was read: {e}") from e
    except OSError as e:
        if e.filename is None or os.fspath(e.filename) != os.fspath(path):
            raise
        raise source_error(root, rel, e) from e
