"""RDC-style download of an update's changed files (:mod:`actors.dp._rdcsig`).

For every changed file at once, level by level, the source's ``SMS_DP_SMSSIG$`` answers
the new file's super-chunks, then the groups inside the super-chunks the old file lacks,
then the chunks inside the groups it lacks, then block hashes of the short runs of chunks
it still lacks; what matches the old file (by hash, at any offset for the content-defined
levels, at the same distance from the run's matched neighbours for blocks) is copied
locally, and the bytes that match nothing come in one ranges request for all files,
compressed together. A changed file with no old counterpart, if small, comes whole in that
request too. Five requests in all, whatever the number of files and edits.

A file that does not come out with its SHA-256 (a short hash that matched by chance, a
source that changed meanwhile) is fetched whole instead, as is every file when no source
answers; the caller's full download does that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import aiohttp
import anyio
import msgspec
import zstandard

from actors.dp import (
    BLOCK,
    BLOCK_HASH,
    LEVEL_BLOCK,
    LEVEL_CHUNK,
    LEVEL_GROUP,
    LEVEL_SUPER,
    PKG_SHARE,
    SIG_SHARE,
    DataAsk,
    Level,
    SigAsk,
    SigTree,
    block_hashes,
)
from actors.errors import DownloadFailed, TransferError
from actors.pulldp._dts import Progress, Source, Wire, body_decoder, http_overhead
from contentlib import ContentLibrary, FileEntry

__all__ = ["WHOLE_MAX", "RdcFile", "rdc_download"]

WHOLE_MAX = 1 << 20  # a changed file with no old counterpart, up to this, comes in the batch
_BLOCK_RUN_MAX = 64 << 10  # a longer missing run is new content: its block hashes cost more
_DATA_MAX = 16 << 20  # bytes of one ranges answer (held in memory); the rest come whole
_levels = msgspec.msgpack.Decoder(list[Level])
_Span = tuple[int, int]
# (offset in the new file, length, offset in the old file or -1: in the fetched bytes)
_Piece = tuple[int, int, int]


class RdcFile:
    """One file to build: its entry, the old file it is built from (None: none), and what
    is known so far."""

    def __init__(self, entry: FileEntry, old: FileEntry | None, old_path: Path | None) -> None:
        self.entry = entry
        self.old = old
        self.old_path = old_path
        self.tree: SigTree | None = None
        self.copies: list[_Piece] = []  # pieces found in the old file
        self.pending: list[_Span] = [(0, entry.size)] if entry.size else []
        self.missing = 0  # bytes to fetch, once planned

    def resolve(self, level: int, answer: Level) -> None:
        """The level's items inside :attr:`pending`: the old file's are copies, the
        others stay pending (adjacent ones as one span)."""
        if self.tree is None:
            raise DownloadFailed(f"{self.entry.path} has no old file to compare with")
        index = self.tree.index(level)
        items = iter(zip(answer.lengths, _split(answer.hashes, len(answer.lengths)), strict=True))
        still: list[_Span] = []
        for start, stop in self.pending:
            at = start
            while at < stop:
                length, h = next(items, (0, b""))
                if length <= 0 or at + length > stop:
                    raise DownloadFailed(f"the signature of {self.entry.path} does not add up")
                hit = index.get(h)
                if hit is not None and hit[1] == length:
                    self.copies.append((at, length, hit[0]))
                elif still and still[-1][1] == at:
                    still[-1] = (still[-1][0], at + length)
                else:
                    still.append((at, at + length))
                at += length
        if next(items, None) is not None:
            raise DownloadFailed(f"the signature of {self.entry.path} does not add up")
        self.pending = still

    def refinable(self) -> list[tuple[_Span, int | None, int | None]]:
        """Short pending runs with where their matched neighbours put them in the old file:
        (run, old offset of its start, old offset of its end), either None if unknown."""
        if self.old is None:
            return []
        ends = {off + length: src + length for off, length, src in self.copies}
        starts = {off: src for off, length, src in self.copies}
        out: list[tuple[_Span, int | None, int | None]] = []
        for start, stop in self.pending:
            before = 0 if start == 0 else ends.get(start)
            after = self.old.size if stop == self.entry.size else starts.get(stop)
            if stop - start <= _BLOCK_RUN_MAX and (before is not None or after is not None):
                out.append(((start, stop), before, after))
        return out

    def pieces(self) -> list[_Piece]:
        """The whole file, in order: copies, and the fetched spans (src -1)."""
        fetched = [(a, b - a, -1) for a, b in self.pending]
        return _merge(sorted(self.copies + fetched))


async def rdc_download(
    session: aiohttp.ClientSession,
    sources: Sequence[Source],
    files: Sequence[RdcFile],
    library: ContentLibrary,
    folder: Path,
    *,
    allow_fallback: bool,
    progress: Progress,
    wire: Wire,
    signatures_done: Callable[[], None],
    failed: Callable[[str], None] = lambda why: None,
) -> list[FileEntry]:
    """Build ``files`` in ``folder`` (each under its SHA-256, checked); returns the entries
    that did not come out and must be fetched whole."""
    for f in files:
        if f.old is not None:
            f.tree = await anyio.to_thread.run_sync(SigTree, await library.signature(f.old.sha256))
    plan: Source | None = None
    reasons: list[str] = []
    for source in sources if allow_fallback else sources[:1]:
        try:
            await _plan(session, source, files, wire)
        except (TransferError, aiohttp.ClientError, OSError, msgspec.DecodeError) as exc:
            reasons.append(f"{source.name}: {exc}")
            failed(reasons[-1])
            for f in files:  # (planned again from the start)
                f.copies, f.pending = [], [(0, f.entry.size)] if f.entry.size else []
            continue
        plan = source
        break
    signatures_done()
    if plan is None:
        return [f.entry for f in files]
    chosen, whole = _fit(files)
    try:
        data = await _fetch(session, plan, chosen, wire)
    except (TransferError, aiohttp.ClientError, OSError) as exc:
        failed(f"{plan.name}: {exc}")
        return [f.entry for f in files]
    view = memoryview(data)
    at = 0
    for f in chosen:
        built = await anyio.to_thread.run_sync(
            _build, f, view[at : at + f.missing], folder / f.entry.sha256
        )
        at += f.missing
        if built:
            await progress(f.entry.size)
        else:
            failed(f"{plan.name}: {f.entry.path} did not match its hash {f.entry.sha256}")
            whole.append(f.entry)
    return whole


async def _plan(
    session: aiohttp.ClientSession, source: Source, files: Sequence[RdcFile], wire: Wire
) -> None:
    """The signature rounds: after them each file's pending spans are what it must fetch."""
    url = source.url.replace(PKG_SHARE, SIG_SHARE)
    based = [f for f in files if f.tree is not None]
    for level in (LEVEL_SUPER, LEVEL_GROUP, LEVEL_CHUNK):
        asking = [f for f in based if f.pending]
        if not asking:
            break
        asks = [SigAsk(f.entry.path, level, tuple(f.pending)) for f in asking]
        answers = _levels.decode(await _post(session, source, url, asks, wire))
        if len(answers) != len(asks):
            raise DownloadFailed("the source answered another number of signatures")
        for f, answer in zip(asking, answers, strict=True):
            f.resolve(level, answer)
    runs = [(f, r) for f in based for r in f.refinable()]
    if not runs:
        return
    by_file: dict[str, list[tuple[_Span, int | None, int | None]]] = {}
    for f, r in runs:
        by_file.setdefault(f.entry.sha256, []).append(r)
    asking = [f for f in based if f.entry.sha256 in by_file]
    asks = [
        SigAsk(f.entry.path, LEVEL_BLOCK, tuple(r[0] for r in by_file[f.entry.sha256]))
        for f in asking
    ]
    answers = _levels.decode(await _post(session, source, url, asks, wire))
    if len(answers) != len(asks):
        raise DownloadFailed("the source answered another number of signatures")
    for f, answer in zip(asking, answers, strict=True):
        await anyio.to_thread.run_sync(_refine, f, by_file[f.entry.sha256], answer.hashes)


def _refine(f: RdcFile, runs: list[tuple[_Span, int | None, int | None]], hashes: bytes) -> None:
    """Blocks of the runs that the old file holds where the neighbours put them."""
    if f.old_path is None or f.old is None:
        return
    if len(hashes) != BLOCK_HASH * sum(-(-(b - a) // BLOCK) for (a, b), _, _ in runs):
        raise DownloadFailed(f"the block hashes of {f.entry.path} do not add up")
    size = f.old.size
    fetch: set[_Span] = set()
    at = 0
    with open(f.old_path, "rb") as old:
        for (start, stop), before, after in runs:
            for x in range(start, stop, BLOCK):
                length = min(BLOCK, stop - x)
                want = hashes[at : at + BLOCK_HASH]
                at += BLOCK_HASH
                for src in (
                    None if before is None else before + (x - start),
                    None if after is None else after - (stop - x),
                ):
                    if src is None or src < 0 or src + length > size:
                        continue
                    old.seek(src)
                    data = old.read(length)
                    if block_hashes(data) == want:
                        f.copies.append((x, length, src))
                        break
                else:
                    fetch.add((x, x + length))
    asked = {r[0] for r in runs}
    f.pending = _spans(sorted([run for run in f.pending if run not in asked] + sorted(fetch)))


def _fit(files: Sequence[RdcFile]) -> tuple[list[RdcFile], list[FileEntry]]:
    """The files worth building (less than half of each to fetch, one answer's worth in
    all), and the others, to fetch whole."""
    chosen: list[RdcFile] = []
    whole: list[FileEntry] = []
    total = 0
    for f in files:
        f.missing = sum(b - a for a, b in f.pending)
        worth = f.old is None or f.missing <= f.entry.size // 2
        if worth and total + f.missing <= _DATA_MAX:
            chosen.append(f)
            total += f.missing
        else:
            whole.append(f.entry)
    return chosen, whole


async def _fetch(
    session: aiohttp.ClientSession, source: Source, files: list[RdcFile], wire: Wire
) -> bytes:
    asks = [DataAsk(f.entry.path, tuple(f.pending)) for f in files if f.pending]
    if not asks:
        return b""
    data = await _post(session, source, source.url, asks, wire)
    if len(data) != sum(f.missing for f in files):
        raise DownloadFailed(f"the source answered {len(data)} bytes of ranges")
    return data


async def _post(
    session: aiohttp.ClientSession, source: Source, url: str, asks: object, wire: Wire
) -> bytes:
    """One request to the source over its link: the answer's bytes, decoded; ``wire``
    hears every byte both ways, headers included."""
    body = msgspec.msgpack.encode(asks)
    await source.link.open()
    async with session.post(
        url,
        data=body,
        headers={"Accept-Encoding": "zstd", "Content-Type": "application/msgpack"},
        auto_decompress=False,
    ) as response:
        raw = await response.read()
        wire(len(body) + len(raw), http_overhead(response))
        if response.status != 200:
            raise DownloadFailed(f"HTTP {response.status} from {source.name}: {raw[:200]!r}")
        decode = body_decoder(response)
    await source.link.carry(source.link.allowance(len(raw)))  # (raises at a cut)
    try:
        return raw if decode is None else decode(raw)
    except zstandard.ZstdError as exc:
        raise DownloadFailed(f"{source.name} answered a damaged body: {exc}") from exc


def _build(f: RdcFile, fetched: memoryview, part: Path) -> bool:
    """Write the file from the old one and the fetched bytes, hashing as it goes; a file
    that does not match its hash is deleted."""
    digest = hashlib.sha256()
    at = 0
    with open(part, "wb") as out, open(f.old_path or part, "rb") as old:
        for _, length, src in f.pieces():
            if src >= 0:
                old.seek(src)
                data: bytes | memoryview = old.read(length)
            else:
                data = fetched[at : at + length]
                at += length
            if len(data) != length:
                break
            out.write(data)
            digest.update(data)
    if digest.hexdigest().upper() == f.entry.sha256:
        return True
    part.unlink(missing_ok=True)
    return False


def _split(hashes: bytes, count: int) -> list[bytes]:
    size = len(hashes) // count if count else 0
    if size * count != len(hashes):
        raise DownloadFailed("signature hashes of an uneven size")
    return [hashes[i * size : (i + 1) * size] for i in range(count)]


def _spans(spans: list[_Span]) -> list[_Span]:
    """Sorted spans with adjacent ones joined."""
    out: list[_Span] = []
    for a, b in spans:
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _merge(pieces: list[_Piece]) -> list[_Piece]:
    """Adjacent pieces of one kind as one (fewer seeks and writes)."""
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
