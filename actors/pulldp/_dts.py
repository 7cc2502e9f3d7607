"""The Data Transfer Service: downloads of a pull DP over HTTP, from ranked sources.

A file is fetched with a range request from the bytes already in its part file (a cut
download resumes where it stopped, from the same or the next source), through the link
model of the source's path (bandwidth, latency, down, cuts), and its SHA-256 is checked
before anyone uses it: a file that does not match is deleted and fetched again from the
next source. Writes go through aiofiles, as the design card asks of chunked streams.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import aiofiles
import aiohttp
import anyio
import zstandard

from actors.errors import DownloadFailed, TransferError
from actors.network import NetworkLink
from contentlib import FileEntry

__all__ = [
    "CHUNK",
    "Progress",
    "Source",
    "Wire",
    "body_decoder",
    "download_file",
    "http_overhead",
    "remove_tree",
]

CHUNK = 4 << 20  # read size (measured: 4 MiB reads ~1.7x faster than 1 MiB on loopback)

Progress = Callable[[int], Awaitable[None]]
Wire = Callable[[int, int], None]
"""Bytes that crossed: (payload: bodies, HTTP overhead: request lines and headers)."""


class Source:
    """A ranked source DP: where its share is and the link on the way from it."""

    __slots__ = ("link", "name", "url")

    def __init__(self, name: str, url: str, link: NetworkLink) -> None:
        self.name = name
        self.url = url  # the content version's DPUrl
        self.link = link

    def file_url(self, path: str) -> str:
        return f"{self.url}/{quote(path)}"


async def download_file(
    session: aiohttp.ClientSession,
    sources: Sequence[Source],
    entry: FileEntry,
    part: Path,
    *,
    allow_fallback: bool,
    progress: Progress,
    wire: Wire,
    failed: Callable[[str], None] = lambda why: None,
) -> None:
    """Fetch ``entry`` into ``part`` (resuming what is there) and check its hash. ``wire``
    hears the bytes that cross as they do (a cut or failed try's bytes crossed too),
    ``failed`` why a source failed before the next is tried. Raises
    :class:`DownloadFailed` naming each source's failure."""
    reasons: list[str] = []
    for source in sources if allow_fallback else sources[:1]:
        try:
            got = await _fetch(session, source, entry, part, wire, progress)
        except (TransferError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            reasons.append(f"{source.name}: {exc}")
            failed(reasons[-1])
            continue
        if got == entry.sha256:
            return
        await anyio.to_thread.run_sync(_discard, part)  # no corrupt file is kept
        reasons.append(f"{source.name}: {entry.path} did not match its hash {entry.sha256}")
        failed(reasons[-1])
    raise DownloadFailed(f"{entry.path}: " + "; ".join(reasons or ["no source"]))


async def _fetch(
    session: aiohttp.ClientSession,
    source: Source,
    entry: FileEntry,
    part: Path,
    wire: Wire,
    progress: Progress,
) -> str:
    """Fetch the rest of the file into ``part``; returns the SHA-256 of the whole part,
    hashed as it is written (a resumed part's bytes are hashed first). ``wire`` hears the
    bytes that crossed (zstd-encoded when the server sent them so), ``progress`` the bytes
    of the file written."""
    digest, offset = await anyio.to_thread.run_sync(_resume, part, entry.size)
    if offset == entry.size:
        return digest.hexdigest().upper()
    link = source.link
    await link.open()
    headers = {"Accept-Encoding": "zstd"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    # Reading the socket and writing + hashing the file overlap (a bounded queue between
    # them): measured ~1.3-1.6x the serial loop's MB/s on loopback.
    send, receive = anyio.create_memory_object_stream[bytes](4)
    failure: Exception | None = None

    async def write() -> None:
        async with aiofiles.open(part, "ab") as out, receive:
            async for piece in receive:
                await out.write(piece)
                await anyio.to_thread.run_sync(digest.update, piece)  # (releases the GIL)

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        async with send:
            try:
                async with session.get(
                    source.file_url(entry.path), headers=headers, auto_decompress=False
                ) as response:
                    wire(0, http_overhead(response))
                    if response.status != (206 if offset else 200):
                        raise DownloadFailed(f"HTTP {response.status} for {entry.path}")
                    decode = body_decoder(response)
                    async for chunk in response.content.iter_chunked(CHUNK):
                        allowed = link.allowance(len(chunk))  # a cut leaves what crossed
                        piece = chunk[:allowed] if allowed < len(chunk) else chunk
                        wire(allowed, 0)
                        if decode is not None:
                            piece = decode(piece)
                        await send.send(piece)
                        await progress(len(piece))
                        await link.carry(allowed)
            except Exception as exc:  # the writer still writes what crossed, then it ends
                failure = exc
    if failure is not None:
        raise failure
    return digest.hexdigest().upper()


def http_overhead(response: aiohttp.ClientResponse) -> int:
    """The bytes of a request's line and headers and of its response's status line and
    headers, as they crossed the connection (bodies apart)."""
    request = response.request_info
    sent = len(f"{request.method} {request.url.raw_path_qs} HTTP/1.1\r\n") + 2
    sent += sum(len(k) + len(v) + 4 for k, v in request.headers.items())
    got = len(f"HTTP/1.1 {response.status} {response.reason}\r\n") + 2
    got += sum(len(k) + len(v) + 4 for k, v in response.raw_headers)
    return sent + got


def body_decoder(response: aiohttp.ClientResponse) -> Callable[[bytes], bytes] | None:
    """How to decode the body's pieces, by its Content-Encoding (zstd or none)."""
    encoding = response.headers.get("Content-Encoding", "identity")
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress
    if encoding != "identity":
        raise DownloadFailed(f"unexpected Content-Encoding {encoding!r}")
    return None


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _resume(part: Path, size: int) -> tuple[hashlib._Hash, int]:
    """The hash of the bytes a cut download left, and how many (none, or more than the
    file: started over)."""
    digest = hashlib.sha256()
    try:
        offset = part.stat().st_size
    except FileNotFoundError:
        part.touch()  # an empty file is complete at once, and must exist for the library
        return digest, 0
    if offset > size:
        part.unlink()
        return digest, 0
    with open(part, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest, offset


def remove_tree(path: Path) -> None:
    """Delete a job's staging folder (files first, then folders)."""
    for dirpath, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(dirpath, name))
        for name in dirs:
            os.rmdir(os.path.join(dirpath, name))
    if path.exists():
        os.rmdir(path)
