"""File deltas: both methods reproduce the new file bit for bit, or refuse."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contentlib import ContentLibrary, CorruptPackageFile, HashMismatch, _delta
from tests.contentlib.contentlib_helpers import sha


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def store(lib: ContentLibrary, data: bytes) -> str:
    await lib.add_file_stream(sha(data), len(data), _one(data))
    return sha(data)


# edits: (kind, position fraction, length, seed)
_edit = st.tuples(
    st.sampled_from(["insert", "delete", "overwrite"]),
    st.floats(0, 1),
    st.integers(0, 3000),
    st.integers(0, 2**16),
)


def apply_edits(old: bytes, edits: list[tuple[str, float, int, int]]) -> bytes:
    new = bytearray(old)
    for kind, where, length, seed in edits:
        at = int(where * len(new))
        blob = random.Random(seed).randbytes(length)
        if kind == "insert":
            new[at:at] = blob
        elif kind == "delete":
            del new[at : at + length]
        else:
            new[at : at + length] = blob
    return bytes(new)


_base = st.sampled_from([0, 1, 100, 5000, 70_000]).map(lambda n: random.Random(n).randbytes(n))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(old=_base, edits=st.lists(_edit, max_size=5), small=st.binary(max_size=50))
async def test_delta_roundtrip_both_methods(
    tmp_path: Path, old: bytes, edits: list[tuple[str, float, int, int]], small: bytes
) -> None:
    new = apply_edits(old, edits) if edits else small
    lib = ContentLibrary(tmp_path / f"lib{os.urandom(4).hex()}")
    old_sha, new_sha = await store(lib, old), await store(lib, new)
    d_ref = await lib.file_delta(old_sha, new_sha)
    d_cl = await lib.file_delta_from_signature(await lib.signature(old_sha), new_sha)
    for d in (d_ref, d_cl):
        if new_sha != old_sha:
            lib.file_path(new_sha).unlink()
        assert await lib.apply_file_delta(old_sha, d, new_sha, len(new)) == new_sha
        assert lib.file_path(new_sha).read_bytes() == new


async def test_small_edit_gives_small_delta(tmp_path: Path) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    old = random.Random(1).randbytes(1 << 20)
    new = old[:1000] + b"inserted" + old[1000:500_000] + b"X" + old[500_001:]
    old_sha, new_sha = await store(lib, old), await store(lib, new)
    assert len(await lib.file_delta(old_sha, new_sha)) < 200
    cl = await lib.file_delta_from_signature(await lib.signature(old_sha), new_sha)
    assert len(cl) < 20_000


async def test_large_files_fall_back_to_copy_literal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_delta, "REFERENCE_CAP", 10_000)
    lib = ContentLibrary(tmp_path / "lib")
    old = random.Random(2).randbytes(200_000)
    new = old[:50_000] + b"edit" + old[50_000:]
    old_sha, new_sha = await store(lib, old), await store(lib, new)
    d = await lib.file_delta(old_sha, new_sha)
    assert d[:5] == b"CMDLC"
    lib.file_path(new_sha).unlink()
    await lib.apply_file_delta(old_sha, d, new_sha, len(new))
    assert lib.file_path(new_sha).read_bytes() == new


async def test_wrong_or_corrupt_delta_is_refused_and_stores_nothing(tmp_path: Path) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    a, b, c = os.urandom(5000), os.urandom(6000), os.urandom(100)
    sa, sb = await store(lib, a), await store(lib, b)
    d = await lib.file_delta(sa, sb)
    with pytest.raises(HashMismatch):
        await lib.apply_file_delta(sa, d, sha(c), len(b))
    with pytest.raises(CorruptPackageFile):
        await lib.apply_file_delta(sa, d[:5] + b"garbage" + d[12:], sha(c), len(b))
    with pytest.raises(CorruptPackageFile, match="exceeds"):
        await lib.apply_file_delta(sa, d, sha(c), 10)
    with pytest.raises(CorruptPackageFile, match="header"):
        await lib.apply_file_delta(sa, b"nope", sha(c), 10)
    assert not lib.has_file(sha(c))
    assert not list((tmp_path / "lib" / "tmp").iterdir())


async def test_signature_is_cached_and_content_defined(tmp_path: Path) -> None:
    lib = ContentLibrary(tmp_path / "lib")
    data = random.Random(3).randbytes(300_000)
    s1 = await lib.signature(await store(lib, data))
    assert sum(s1.lengths) == s1.size == len(data)
    assert len(s1.hashes) == 16 * len(s1.lengths)
    assert await lib.signature(sha(data)) == s1
    s2 = await lib.signature(await store(lib, b"prefix" + data))
    shared = set(s1.chunk_hashes()) & set(s2.chunk_hashes())
    assert len(shared) >= len(s1.lengths) - 2  # an insertion shifts nothing after it
