"""Generated source trees for the content library benchmarks (deterministic per seed)."""

from __future__ import annotations

import random
from pathlib import Path

_WORDS = [
    "package",
    "content",
    "distribution",
    "point",
    "site",
    "server",
    "library",
    "version",
    "update",
    "manifest",
    "signature",
    "delta",
    "chunk",
    "hash",
    "sender",
    "despooler",
    "scheduler",
    "status",
    "message",
    "install",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "for",
    "on",
    "with",
    "by",
    "from",
    "that",
    "this",
    "it",
    "as",
    "be",
    "are",
]


def text(rng: random.Random, size: int) -> bytes:
    """Compressible, text-like bytes (lines of words), about size long."""
    out: list[str] = []
    n = 0
    while n < size:
        line = " ".join(rng.choices(_WORDS, k=rng.randint(4, 14))) + "\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def binary(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def mixed_sizes(total: int, seed: int = 0) -> list[int]:
    """File sizes summing to ``total``: ~40% in large files, ~40% medium, ~20% small."""
    rng = random.Random(seed)
    sizes: list[int] = []
    for share, lo, hi in (
        (0.4, 32 << 20, 128 << 20),
        (0.4, 256 << 10, 8 << 20),
        (0.2, 1, 64 << 10),
    ):
        budget = int(total * share)
        while budget > 0:
            s = min(budget, rng.randint(lo, hi))
            sizes.append(s)
            budget -= s
    rng.shuffle(sizes)
    return sizes


def write_mixed_tree(root: Path, total: int, seed: int = 0) -> int:
    """A tree of distinct random files (mixed sizes) under root; returns its byte count.

    Bytes are slices of one random pool, each file prefixed with its own index, so every
    file is distinct without generating ``total`` random bytes."""
    rng = random.Random(seed)
    pool = rng.randbytes(160 << 20)
    written = 0
    for i, size in enumerate(mixed_sizes(total, seed)):
        path = root / f"d{i % 17:02d}" / f"s{i % 5}" / f"file{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        start = rng.randrange(0, len(pool) - size + 1)
        head = f"{i}:".encode()
        path.write_bytes(
            head + pool[start : start + size - len(head)] if size > len(head) else head[:size]
        )
        written += size
    return written
