"""The open index of a library: what a clean close left, so that the next open reads one
file instead of one file per manifest.

Written by ``ContentLibrary.aclose`` after everything else is durable; taken (read, then
deleted durably) by the next open before anything can change, so an index on disk always
describes a library that nothing has written since: a run that crashes leaves none, and
its next open checks every manifest as before.

Each manifest comes with the stamp of its DataLib file at close (inode, size, mtime, ctime).
The open trusts the indexed manifest only while the file still has that stamp; any write
to the file changes its ctime, so a manifest damaged (or replaced) while the library was
closed is read and checked again, and quarantined if it fails. A file changed so close to
the close that the filesystem's coarse clock could give a later write the same ctime gets
no stamp: it is always read again ("racy", as git calls it).

``garbage_free``: at close no FileLib file lay outside every manifest, so the open's
garbage collection is not needed while DataLib still holds every indexed manifest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

from contentlib import _fs
from contentlib._model import Manifest

__all__ = ["Stamp", "Taken", "entries", "stamp", "take", "write", "write_again"]

NAME = "cmdist-index.msgpack"  # in the library's root, beside DataLib
_FORMAT = 1
_CHUNK = 64  # manifests per chunk: each decoded in one short call (the GIL is let go between)
_RACY_NS = 1_000_000_000  # a file changed this close to the close is read again at open

Stamp = tuple[int, int, int, int]
"""inode, size, mtime_ns, ctime_ns of a DataLib file."""


class _Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    manifest: Manifest
    stamp: Stamp | None  # None: racy, read the file again


class _Index(msgspec.Struct, frozen=True, array_like=True):
    format: int
    garbage_free: bool
    chunks: list[msgspec.Raw]  # each a msgpack list[_Entry]


class Taken(msgspec.Struct, frozen=True):
    """An index read at open (and deleted)."""

    garbage_free: bool
    chunks: list[msgspec.Raw]
    data: bytes  # as read: written back as it is by a close that changed nothing


_index_decoder = msgspec.msgpack.Decoder(_Index)
_chunk_decoder = msgspec.msgpack.Decoder(list[_Entry])
_encoder = msgspec.msgpack.Encoder()


def stamp(st: os.stat_result) -> Stamp:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def take(root: Path) -> Taken | None:
    """Read the index and delete it durably (before the library can change); None when
    there is none or it does not decode (the open then checks every manifest)."""
    path = root / NAME
    data = _fs.read_if_exists(path)
    if data is None:
        return None
    path.unlink()
    _fs.fsync_dir(root)
    try:
        index = _index_decoder.decode(data)
    except msgspec.DecodeError:
        return None
    if index.format != _FORMAT:
        return None
    return Taken(index.garbage_free, index.chunks, data)


def entries(taken: Taken) -> Iterator[tuple[Manifest, Stamp | None]]:
    """The indexed manifests with their stamps, decoded one chunk at a time."""
    for chunk in taken.chunks:
        for e in _chunk_decoder.decode(chunk):
            yield e.manifest, e.stamp


def write_again(root: Path, taken: Taken) -> None:
    """The index an open took, written back durably: the library has not changed since."""
    _fs.atomic_write(root / NAME, taken.data)


def write(
    root: Path, datalib: Path, manifests: Iterable[Manifest], garbage_free: bool, *, sync: bool
) -> None:
    """Write the index durably (blocking); ``sync``: the library changed since it was
    opened, so sync its filesystem first (PkgLib is written unsynced)."""
    if sync:
        _fs.sync_filesystem(root)
    now = time.time_ns()
    stamps: dict[str, Stamp] = {}
    with os.scandir(datalib) as it:
        for e in it:
            if e.name.endswith(".json") and e.is_file(follow_symlinks=False):
                s = stamp(e.stat(follow_symlinks=False))
                if max(s[2], s[3]) < now - _RACY_NS:
                    stamps[e.name] = s
    todo = [_Entry(m, stamps.get(f"{m.content_id}.json")) for m in manifests]
    chunks = [
        msgspec.Raw(_encoder.encode(todo[i : i + _CHUNK])) for i in range(0, len(todo), _CHUNK)
    ]
    _fs.atomic_write(root / NAME, _encoder.encode(_Index(_FORMAT, garbage_free, chunks)))
