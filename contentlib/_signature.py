"""FastCDC chunk signatures (pyfastcdc, measured at ~1.7 GB/s cut, ~1 GB/s with chunk hashes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyfastcdc

from contentlib._model import FileSignature

AVG_CHUNK = 2048  # small chunks: a copy/literal delta of small text edits stays small
_BUF = 4 << 20


def chunker(avg: int = AVG_CHUNK) -> pyfastcdc.FastCDC:
    return pyfastcdc.FastCDC(avg, min_size=max(64, avg // 4), max_size=avg * 8)


def chunk_hash(data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def compute(path: Path, sha256: str) -> FileSignature:
    """Stream the file through FastCDC in bounded memory."""
    lengths: list[int] = []
    hashes = bytearray()
    with open(path, "rb", buffering=_BUF) as f:
        for chunk in chunker().cut_stream(f):
            lengths.append(chunk.length)
            hashes += chunk_hash(chunk.data)
    return FileSignature(sha256, sum(lengths), AVG_CHUNK, tuple(lengths), bytes(hashes))
