"""Two-level RDC signatures, as the product's recursive RDC keeps the signature download
small: a file's FastCDC chunks are grouped into super-chunks whose boundaries are content
defined too (a chunk whose hash starts with a byte below :data:`_CUT` ends one), so an
unchanged region groups the same way in the old and the new file. A pull DP first fetches
the super-chunks (a few bytes per 128 KiB), then the chunk signatures of only the
super-chunks its old file lacks, then only the chunks it lacks."""

from __future__ import annotations

import hashlib

import msgspec

from contentlib import FileSignature

__all__ = ["ChunkSlice", "SuperSignature", "chunk_slices", "parse_ranges", "super_signature"]

_CUT = 4  # 4/256: a super-chunk of ~64 chunks (~128 KiB) on average
_MAX_CHUNKS = 256


class SuperSignature(msgspec.Struct, frozen=True, array_like=True):
    sha256: str
    size: int
    counts: tuple[int, ...]  # chunks per super-chunk
    lengths: tuple[int, ...]  # bytes per super-chunk
    hashes: bytes  # 16 bytes per super-chunk: BLAKE2b of its chunks' hashes


class ChunkSlice(msgspec.Struct, frozen=True, array_like=True):
    """The chunk signature of chunks ``start`` .. ``start + len(lengths)``."""

    start: int
    lengths: tuple[int, ...]
    hashes: bytes


def super_signature(sig: FileSignature) -> SuperSignature:
    counts: list[int] = []
    lengths: list[int] = []
    hashes = bytearray()
    group: list[bytes] = []
    size = 0
    for length, h in zip(sig.lengths, sig.chunk_hashes(), strict=True):
        group.append(h)
        size += length
        if h[0] < _CUT or len(group) >= _MAX_CHUNKS:
            counts.append(len(group))
            lengths.append(size)
            hashes += hashlib.blake2b(b"".join(group), digest_size=16).digest()
            group, size = [], 0
    if group:
        counts.append(len(group))
        lengths.append(size)
        hashes += hashlib.blake2b(b"".join(group), digest_size=16).digest()
    return SuperSignature(sig.sha256, sig.size, tuple(counts), tuple(lengths), bytes(hashes))


def chunk_slices(sig: FileSignature, ranges: list[tuple[int, int]]) -> list[ChunkSlice]:
    n = len(sig.lengths)
    return [
        ChunkSlice(a, sig.lengths[a:b], sig.hashes[16 * a : 16 * b])
        for a, b in ranges
        if 0 <= a < b <= n
    ]


def parse_ranges(text: str, limit: int = 10_000) -> list[tuple[int, int]]:
    """``"0-5,9-12"`` -> [(0, 5), (9, 12)]; ValueError for anything else."""
    out: list[tuple[int, int]] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        start, stop = int(a), int(b)
        if start < 0 or stop <= start:
            raise ValueError(f"bad chunk range {part!r}")
        out.append((start, stop))
    if len(out) > limit:
        raise ValueError("too many chunk ranges")
    return out
