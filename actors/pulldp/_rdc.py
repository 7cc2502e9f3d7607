"""RDC-style download of changed files: the new file's chunk signature from the source's
``SMS_DP_SMSSIG$``, compared with the signature of the old file the library holds; the
chunks found there are copied locally, only the others are fetched with range requests
(adjacent ones merged into one range). A file that does not come out with its hash is
fetched whole instead."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import aiofiles
import aiohttp
import anyio
import msgspec

from actors.dp import ChunkSlice, SuperSignature, super_signature
from actors.errors import DownloadFailed, TransferError
from actors.pulldp._dts import Progress, Source, download_file, fetch_range, sha256_of
from contentlib import ContentLibrary, FileEntry, FileSignature

__all__ = ["rdc_download"]

_supers = msgspec.msgpack.Decoder(SuperSignature)
_slices = msgspec.msgpack.Decoder(list[ChunkSlice])

# (offset in the new file, length, offset in the old file or -1: fetch it)
_Piece = tuple[int, int, int]


async def rdc_download(
    session: aiohttp.ClientSession,
    sources: Sequence[Source],
    entries: Sequence[FileEntry],
    old: Mapping[str, FileEntry],
    library: ContentLibrary,
    folder: Path,
    *,
    allow_fallback: bool,
    progress: Progress,
    signatures_done: Callable[[], None],
) -> int:
    """Build each of ``entries`` (new sha256 -> the old file in ``old``) in ``folder``;
    returns the bytes that crossed (signatures and ranges)."""
    crossed = 0
    plans: dict[str, tuple[Source, list[_Piece]] | None] = {}
    for entry in entries:
        plans[entry.sha256] = None
        for source in sources if allow_fallback else sources[:1]:
            base = await library.signature(old[entry.sha256].sha256)
            try:
                pieces, n = await _remote_plan(session, source, entry, base)
            except (TransferError, aiohttp.ClientError, OSError, msgspec.DecodeError):
                continue
            crossed += n
            plans[entry.sha256] = (source, pieces)
            break
    signatures_done()
    for entry in entries:
        part = folder / entry.sha256
        plan = plans[entry.sha256]
        if plan is not None:
            try:
                crossed += await _build(
                    session,
                    plan[0],
                    plan[1],
                    entry,
                    library.file_path(old[entry.sha256].sha256),
                    part,
                    progress,
                )
                if await anyio.to_thread.run_sync(sha256_of, part) == entry.sha256:
                    continue
            except (TransferError, aiohttp.ClientError, OSError):
                pass
            # whatever it built goes; the whole file follows
            await anyio.Path(part).unlink(missing_ok=True)
        crossed += await download_file(
            session, sources, entry, part, allow_fallback=allow_fallback, progress=progress
        )
    return crossed


async def _get(session: aiohttp.ClientSession, source: Source, url: str) -> bytes:
    await source.link.open()
    async with session.get(url) as response:
        if response.status != 200:
            raise DownloadFailed(f"HTTP {response.status} for {url}")
        data = await response.read()
    await source.link.carry(source.link.allowance(len(data)))
    return data


async def _remote_plan(
    session: aiohttp.ClientSession, source: Source, entry: FileEntry, old: FileSignature
) -> tuple[list[_Piece], int]:
    """The new file as pieces, from its super-chunks and the chunks of the super-chunks the
    old file lacks; and the signature bytes that crossed."""
    base = source.url.replace("SMS_DP_SMSPKG$", "SMS_DP_SMSSIG$") + "/" + quote(entry.path)
    data = await _get(session, source, f"{base}?level=2")
    crossed = len(data)
    new = _supers.decode(data)
    if new.sha256 != entry.sha256 or new.size != entry.size:
        raise DownloadFailed(f"the signature of {entry.path} is for another file")
    known: dict[bytes, tuple[int, int]] = {}
    offset = 0
    mine = super_signature(old)
    for length, i in zip(mine.lengths, range(len(mine.lengths)), strict=True):
        known.setdefault(mine.hashes[16 * i : 16 * i + 16], (offset, length))
        offset += length
    pieces: list[_Piece] = []
    missing: list[tuple[int, int, int]] = []  # (first chunk, end chunk, byte offset)
    chunk = offset = 0
    for i, (count, length) in enumerate(zip(new.counts, new.lengths, strict=True)):
        hit = known.get(new.hashes[16 * i : 16 * i + 16])
        if hit is not None and hit[1] == length:
            pieces.append((offset, length, hit[0]))
        elif missing and missing[-1][1] == chunk:
            missing[-1] = (missing[-1][0], chunk + count, missing[-1][2])
        else:
            missing.append((chunk, chunk + count, offset))
        chunk += count
        offset += length
    if missing:
        ranges = ",".join(f"{a}-{b}" for a, b, _ in missing)
        data = await _get(session, source, f"{base}?chunks={ranges}")
        crossed += len(data)
        slices = _slices.decode(data)
        if [(s.start, s.start + len(s.lengths)) for s in slices] != [(a, b) for a, b, _ in missing]:
            raise DownloadFailed(f"the chunk signatures of {entry.path} do not match the request")
        for piece in zip(slices, missing, strict=True):
            pieces += _plan(piece[0], piece[1][2], old)
    pieces.sort()
    return _merge(pieces), crossed


def _plan(part: ChunkSlice, offset: int, old: FileSignature) -> list[_Piece]:
    """Chunks of the new file from ``offset`` on: copied where the old file has them."""
    index: dict[bytes, tuple[int, int]] = {}
    at = 0
    for length, h in zip(old.lengths, old.chunk_hashes(), strict=True):
        index.setdefault(h, (at, length))
        at += length
    pieces: list[_Piece] = []
    for i, length in enumerate(part.lengths):
        hit = index.get(part.hashes[16 * i : 16 * i + 16])
        pieces.append((offset, length, hit[0] if hit is not None and hit[1] == length else -1))
        offset += length
    return pieces


def _merge(pieces: list[_Piece]) -> list[_Piece]:
    """Adjacent pieces of one kind as one (a fetch is one range request)."""
    out: list[_Piece] = []
    for off, length, src in pieces:
        if out:
            p_off, p_len, p_src = out[-1]
            if p_off + p_len == off and (
                (src == -1 and p_src == -1) or (src >= 0 and p_src >= 0 and p_src + p_len == src)
            ):
                out[-1] = (p_off, p_len + length, p_src)
                continue
        out.append((off, length, src))
    return out


async def _build(
    session: aiohttp.ClientSession,
    source: Source,
    pieces: list[_Piece],
    entry: FileEntry,
    old_path: Path,
    part: Path,
    progress: Progress,
) -> int:
    crossed = 0
    async with aiofiles.open(part, "wb") as out, aiofiles.open(old_path, "rb") as old:
        for offset, length, src in pieces:
            if src >= 0:
                await old.seek(src)
                data = await old.read(length)
            else:
                data = await fetch_range(session, source, entry.path, offset, offset + length)
                crossed += len(data)
                await progress(len(data))
            await out.write(data)
    return crossed
