"""RDC downloads of an update over real HTTP on 127.0.0.1: a source DP's library serves the
new version, a pull DP's library holds the old one; the files come out bit for bit, only
the bytes the old files lack cross (headers counted), and what cannot be built is handed
back to be fetched whole."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio

from actors.dp import BLOCK, ContentServer
from actors.network import NetworkLink
from actors.pulldp._dts import Source
from actors.pulldp._rdc import RdcFile, rdc_download
from bus import RealClock
from contentlib import ContentLibrary, FileEntry

PKG = "P0100001"


class _Counted:
    def __init__(self) -> None:
        self.payload = self.overhead = self.requests = 0
        self.progress = 0
        self.failures: list[str] = []

    def wire(self, payload: int, overhead: int) -> None:
        self.payload += payload
        self.overhead += overhead
        self.requests += 1

    async def add(self, nbytes: int) -> None:
        self.progress += nbytes

    @property
    def total(self) -> int:
        return self.payload + self.overhead


async def _snapshot(lib: ContentLibrary, root: Path, files: dict[str, bytes], version: int) -> None:
    src = root / f"src{version}"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    await lib.snapshot(PKG, src, f"{PKG}.{version}")


@asynccontextmanager
async def _update(
    tmp_path: Path, old: dict[str, bytes], new: dict[str, bytes], *, sources: int = 1
) -> AsyncIterator[tuple[list[Source], ContentLibrary, ContentLibrary]]:
    """Source DPs holding both versions, the pull DP holding the old one, the server."""
    pull = await ContentLibrary.open(tmp_path / "pull")
    await _snapshot(pull, tmp_path / "p", old, 1)
    async with ContentServer.open() as server:
        out: list[Source] = []
        source_lib = pull
        for i in range(sources):
            source_lib = await ContentLibrary.open(tmp_path / f"dp{i}")
            await _snapshot(source_lib, tmp_path / f"s{i}", old, 1)
            await _snapshot(source_lib, tmp_path / f"s{i}", new, 2)
            name = f"P01DP{i + 1}.CONTOSO.COM"
            server.serve(name, source_lib)
            url = server.locate(server.content_url(name, f"{PKG}.2"))
            out.append(Source(name, url, NetworkLink(f"{name}->pull", RealClock())))
        yield out, pull, source_lib


def _files(pull: ContentLibrary, source: ContentLibrary, *, by_path: bool = True) -> list[RdcFile]:
    """Each changed file of version 2 with its old counterpart (by path), or none."""
    old = {e.path: e for e in pull.manifest(f"{PKG}.1").files}
    out = []
    for e in source.manifest(f"{PKG}.2").files:
        if pull.has_file(e.sha256):
            continue
        base = old.get(e.path) if by_path else None
        out.append(RdcFile(e, base, None if base is None else pull.file_path(base.sha256)))
    return out


async def _run(
    sources: list[Source], files: list[RdcFile], pull: ContentLibrary, folder: Path
) -> tuple[_Counted, list[FileEntry]]:
    await anyio.Path(folder).mkdir(exist_ok=True)
    counted = _Counted()
    async with aiohttp.ClientSession() as session:
        whole = await rdc_download(
            session,
            sources,
            files,
            pull,
            folder,
            allow_fallback=True,
            progress=counted.add,
            wire=counted.wire,
            signatures_done=lambda: None,
            failed=counted.failures.append,
        )
    return counted, whole


def _built(folder: Path, new: dict[str, bytes], files: list[RdcFile]) -> None:
    for f in files:
        assert (folder / f.entry.sha256).read_bytes() == new[f.entry.path]


async def test_scattered_overwrites_fetch_a_block_or_two_each(tmp_path: Path) -> None:
    rng = random.Random(11)
    data = rng.randbytes(1 << 20)
    edited = bytearray(data)
    spots = [100_000, 400_000, 700_000, 1_000_000]
    for at in spots:
        edited[at : at + 16] = rng.randbytes(16)
    old, new = {"big.bin": data}, {"big.bin": bytes(edited)}
    async with _update(tmp_path, old, new) as (sources, pull, source):
        files = _files(pull, source)
        counted, whole = await _run(sources, files, pull, tmp_path / "out")
    assert whole == []
    _built(tmp_path / "out", new, files)
    assert counted.progress == len(data)
    # five requests (three signature levels, blocks, ranges), not one per edit
    assert counted.requests == 5
    # each 16-byte edit costs at most two blocks of literal bytes plus its signatures
    assert counted.total < len(spots) * (2 * BLOCK + 600) + 2_000, counted.total


async def test_inserted_and_deleted_text_and_a_new_small_file(tmp_path: Path) -> None:
    rng = random.Random(12)
    lines = [f"line {i} {rng.random()}\n".encode() for i in range(20_000)]
    text = b"".join(lines)
    edited = b"".join([*lines[:5000], b"an inserted line\n", *lines[5000:12000], *lines[12010:]])
    old = {"doc/a.txt": text, "same.bin": b"s" * 3000}
    new = {"doc/a.txt": edited, "same.bin": b"s" * 3000, "new/readme.txt": b"hello " * 300}
    async with _update(tmp_path, old, new) as (sources, pull, source):
        files = _files(pull, source)
        counted, whole = await _run(sources, files, pull, tmp_path / "out")
    assert whole == []
    assert sorted(f.entry.path for f in files) == ["doc/a.txt", "new/readme.txt"]
    _built(tmp_path / "out", new, files)
    assert counted.total < len(text) // 20, counted.total


async def test_a_file_that_does_not_come_out_is_handed_back_whole(tmp_path: Path) -> None:
    """The source's stored copy changed after its manifest was written: the ranges it
    serves do not build the file its manifest names, so that file is fetched whole."""
    rng = random.Random(13)
    data = rng.randbytes(300_000)
    edited = data[:150_000] + rng.randbytes(3000) + data[153_000:]
    async with _update(tmp_path, {"f.bin": data}, {"f.bin": edited}) as (sources, pull, source):
        files = _files(pull, source)
        stored = source.file_path(files[0].entry.sha256)
        stored.chmod(0o644)
        stored.write_bytes(data[:150_000] + b"X" * 3000 + data[153_000:])
        counted, whole = await _run(sources, files, pull, tmp_path / "out")
    assert whole == [files[0].entry]
    assert not (tmp_path / "out" / files[0].entry.sha256).exists()
    assert any("did not match its hash" in why for why in counted.failures)


async def test_a_source_that_fails_falls_back_to_the_next(tmp_path: Path) -> None:
    rng = random.Random(14)
    data = rng.randbytes(200_000)
    edited = data[:50_000] + rng.randbytes(100) + data[50_100:]
    async with _update(tmp_path, {"f.bin": data}, {"f.bin": edited}, sources=2) as (
        sources,
        pull,
        source,
    ):
        sources[0].link.down = True
        files = _files(pull, source)
        counted, whole = await _run(sources, files, pull, tmp_path / "out")
    assert whole == []
    _built(tmp_path / "out", {"f.bin": edited}, files)
    assert counted.failures
    assert counted.failures[0].startswith("P01DP1.CONTOSO.COM")


async def test_a_large_new_file_with_no_old_counterpart_is_handed_back(tmp_path: Path) -> None:
    """A changed file without an old one to build from comes whole in the batch when it is
    small; half or more of a file missing is not worth building: it is fetched whole."""
    rng = random.Random(15)
    data = rng.randbytes(100_000)
    new = {"f.bin": rng.randbytes(100_000), "n.bin": b"n" * 5000}
    async with _update(tmp_path, {"f.bin": data}, new) as (sources, pull, source):
        files = _files(pull, source)
        counted, whole = await _run(sources, files, pull, tmp_path / "out")
    by_path = {f.entry.path: f for f in files}
    assert whole == [by_path["f.bin"].entry]
    assert (tmp_path / "out" / by_path["n.bin"].entry.sha256).read_bytes() == new["n.bin"]
    assert counted.payload < 100_000 // 4  # the signature of f.bin and n.bin compressed
