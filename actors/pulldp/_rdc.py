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

from actors.errors import DownloadFailed, TransferError
from actors.pulldp._dts import Progress, Source, download_file, fetch_range, sha256_of
from contentlib import ContentLibrary, FileEntry, FileSignature

__all__ = ["rdc_download"]

_decoder = msgspec.msgpack.Decoder(FileSignature)

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
            try:
                sig, n = await _signature(session, source, entry)
            except (TransferError, aiohttp.ClientError, OSError, msgspec.DecodeError):
                continue
            crossed += n
            base = await library.signature(old[entry.sha256].sha256)
            plans[entry.sha256] = (source, _plan(sig, base))
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


async def _signature(
    session: aiohttp.ClientSession, source: Source, entry: FileEntry
) -> tuple[FileSignature, int]:
    url = source.url.replace("SMS_DP_SMSPKG$", "SMS_DP_SMSSIG$") + "/" + quote(entry.path)
    await source.link.open()
    async with session.get(url) as response:
        if response.status != 200:
            raise DownloadFailed(f"HTTP {response.status} for the signature of {entry.path}")
        data = await response.read()
    await source.link.carry(source.link.allowance(len(data)))
    sig = _decoder.decode(data)
    if sig.sha256 != entry.sha256 or sig.size != entry.size:
        raise DownloadFailed(f"the signature of {entry.path} is for another file")
    return sig, len(data)


def _plan(new: FileSignature, old: FileSignature) -> list[_Piece]:
    """The new file as pieces: copied from the old file where a chunk matches, else fetched;
    adjacent pieces of one kind merged."""
    index: dict[bytes, tuple[int, int]] = {}
    offset = 0
    for length, h in zip(old.lengths, old.chunk_hashes(), strict=True):
        index.setdefault(h, (offset, length))
        offset += length
    pieces: list[_Piece] = []
    offset = 0
    for length, h in zip(new.lengths, new.chunk_hashes(), strict=True):
        hit = index.get(h)
        src = hit[0] if hit is not None and hit[1] == length else -1
        if pieces:
            p_off, p_len, p_src = pieces[-1]
            if (src == -1 and p_src == -1) or (src >= 0 and p_src >= 0 and p_src + p_len == src):
                pieces[-1] = (p_off, p_len + length, p_src)
                offset += length
                continue
        pieces.append((offset, length, src))
        offset += length
    return pieces


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
