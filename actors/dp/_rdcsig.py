"""Recursive RDC signatures, as the product's recursive RDC keeps the signature download
small. A file's FastCDC chunks (the content library's signature) are grouped twice more,
with content-defined boundaries (a chunk whose hash starts with a small byte ends a group
or a super-chunk), so an unchanged region groups the same way in the old and the new file:

- *super-chunks*: ~64 chunks (~128 KiB) each; a pull DP fetches these for a whole file;
- *groups*: ~8 chunks each, never across a super-chunk's end; fetched only inside the
  super-chunks the old file lacks;
- *chunks*: fetched only inside the groups the old file lacks;
- *blocks*: fixed :data:`BLOCK`-byte pieces of a short run of missing chunks; the pull DP
  compares each with the old file's bytes at the same distance from the run's matched
  neighbours (before and after: an overwrite, an insertion or a deletion inside the run
  leaves the blocks on either side of it where they were), and fetches only the others.

Hashes travel short (:data:`HASH` bytes; :data:`BLOCK_HASH` for a block compared with at
most two places): a false match only makes the built file fail its SHA-256, and the file
is then fetched whole. Every level is asked for by byte ranges of the new file, for many
files in one request (:class:`SigAsk`), so an update costs a few requests in all.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence

import msgspec

from contentlib import FileSignature

__all__ = [
    "BLOCK",
    "BLOCK_HASH",
    "HASH",
    "LEVEL_BLOCK",
    "LEVEL_CHUNK",
    "LEVEL_GROUP",
    "LEVEL_SUPER",
    "DataAsk",
    "Level",
    "SigAsk",
    "SigTree",
    "block_hashes",
    "check_spans",
]

LEVEL_SUPER, LEVEL_GROUP, LEVEL_CHUNK, LEVEL_BLOCK = 0, 1, 2, 3
HASH = 8  # bytes of a super-chunk, group or chunk hash on the wire
BLOCK = 256  # bytes of a block
BLOCK_HASH = 4  # bytes of a block's hash on the wire
_SUPER_CUT = 4  # 4/256: a super-chunk of ~64 chunks (~128 KiB) on average
_SUPER_MAX = 256
_GROUP_CUT = 32  # 32/256: a group of ~8 chunks
_GROUP_MAX = 32
_MAX_SPANS = 100_000


class SigAsk(msgspec.Struct, frozen=True, array_like=True):
    """One file's level, inside ``spans`` (byte ranges of the file; ignored for the
    super-chunks, which cover the whole file). Spans of the group and chunk levels are
    unions of whole items of the level above."""

    path: str
    level: int
    spans: tuple[tuple[int, int], ...] = ()


class DataAsk(msgspec.Struct, frozen=True, array_like=True):
    """Byte ranges of one file: the answer is their bytes, in order, after the previous
    asks' bytes."""

    path: str
    spans: tuple[tuple[int, int], ...]


class Level(msgspec.Struct, frozen=True, array_like=True):
    """The items of a level inside the asked spans, in order: their lengths (none for
    blocks: :data:`BLOCK` bytes, the last of a span shorter) and their hashes."""

    lengths: tuple[int, ...]
    hashes: bytes


class SigTree:
    """A file's three content-defined levels, each as (offsets, lengths, hashes)."""

    def __init__(self, sig: FileSignature) -> None:
        self.size = sig.size
        self.levels: list[tuple[list[int], list[int], list[bytes]]] = [
            ([], [], []) for _ in range(3)
        ]
        supers, groups, chunks = self.levels
        offset = 0
        in_super: list[bytes] = []
        in_group: list[bytes] = []
        start_super = start_group = 0
        for length, h in zip(sig.lengths, sig.chunk_hashes(), strict=True):
            chunks[0].append(offset)
            chunks[1].append(length)
            chunks[2].append(h[:HASH])
            offset += length
            in_super.append(h)
            in_group.append(h)
            end_super = h[0] < _SUPER_CUT or len(in_super) >= _SUPER_MAX
            if end_super or h[1] < _GROUP_CUT or len(in_group) >= _GROUP_MAX:
                _close(groups, start_group, offset, in_group)
                in_group, start_group = [], offset
            if end_super:
                _close(supers, start_super, offset, in_super)
                in_super, start_super = [], offset
        if in_group:
            _close(groups, start_group, offset, in_group)
        if in_super:
            _close(supers, start_super, offset, in_super)

    def index(self, level: int) -> dict[bytes, tuple[int, int]]:
        """hash -> (offset, length) of the level's first item with that hash."""
        offsets, lengths, hashes = self.levels[level]
        out: dict[bytes, tuple[int, int]] = {}
        for item in zip(hashes, offsets, lengths, strict=True):
            out.setdefault(item[0], item[1:])
        return out

    def inside(self, level: int, spans: Sequence[tuple[int, int]]) -> Level:
        """The level's items lying inside the spans, in order."""
        offsets, lengths, hashes = self.levels[level]
        if level == LEVEL_SUPER:
            return Level(tuple(lengths), b"".join(hashes))
        out_lengths: list[int] = []
        out_hashes: list[bytes] = []
        for start, stop in spans:
            i = bisect.bisect_left(offsets, start)
            while i < len(offsets) and offsets[i] + lengths[i] <= stop:
                out_lengths.append(lengths[i])
                out_hashes.append(hashes[i])
                i += 1
        return Level(tuple(out_lengths), b"".join(out_hashes))


def _close(
    level: tuple[list[int], list[int], list[bytes]], start: int, stop: int, members: list[bytes]
) -> None:
    level[0].append(start)
    level[1].append(stop - start)
    level[2].append(hashlib.blake2b(b"".join(members), digest_size=HASH).digest())


def block_hashes(data: bytes | memoryview) -> bytes:
    """The hash of each :data:`BLOCK`-byte block of ``data`` (the last one shorter)."""
    view = memoryview(data)
    return b"".join(
        hashlib.blake2b(view[i : i + BLOCK], digest_size=BLOCK_HASH).digest()
        for i in range(0, len(view), BLOCK)
    )


def check_spans(spans: Iterable[tuple[int, int]], size: int) -> None:
    """ValueError unless the spans are ordered, disjoint ranges inside a file of ``size``."""
    last = 0
    for count, (start, stop) in enumerate(spans, 1):
        if start < last or stop <= start or stop > size or count > _MAX_SPANS:
            raise ValueError(f"bad byte range {start}-{stop} of a {size}-byte file")
        last = stop
