"""Content over HTTP: the one web server of a running hierarchy, on 127.0.0.1.

It stands in for the IIS of every DP and management point: ``/<DP>/SMS_DP_SMSPKG$/
<ContentID>/<file>`` serves a file of a content version the DP's library holds (range
requests included, so a pull DP resumes where a download stopped); a POST to
``/<DP>/SMS_DP_SMSSIG$/<ContentID>`` answers RDC signature levels of its files, and one to
``/<DP>/SMS_DP_SMSPKG$/<ContentID>`` byte ranges of its files (:mod:`actors.dp._rdcsig`:
an update asks for what it lacks of every changed file in a few requests, not one per
range); ``/<MP>/ccm_system/request`` takes a state message for a site's MP relay. Routing
is by the DP's name in the path (one port for all, as one host would have one IIS per
machine).

aiohttp on both ends, chosen by measurement on loopback (a 100 MiB file: ~530 MB/s with
4 MiB reads vs ~365 MB/s for ``shutil.copyfile`` of the same file, same run). The server
runs on a thread and loop of its own (``_ServerThread``): a 100 MiB file read by a client
on the caller's loop came at a median 728 MB/s so vs 584 MB/s with the server on that same
loop, and at 268 vs 214 MB/s written, hashed and synced as a pull DP does (5 runs each,
on a loaded 2-core machine). A file is
served only through its version's manifest, from the library's hash-named copy: a path
the manifest does not list (``..``, an encoded separator, another DP's share, a version
the DP does not hold) is a 404 and a log line, and nothing outside the library is read.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlsplit

import anyio
import msgspec
import zstandard
from aiohttp import web

from actors.dp import _rdcsig as rdc
from actors.errors import BadNotification
from contentlib import ContentLibError, ContentLibrary, FileEntry

__all__ = ["PKG_SHARE", "SIG_SHARE", "ContentServer", "StateMessageEndpoint"]

PKG_SHARE = "SMS_DP_SMSPKG$"
SIG_SHARE = "SMS_DP_SMSSIG$"

StateMessageEndpoint = Callable[[bytes], Awaitable[None]]
"""A management point's relay: takes a state message's body (raises to refuse it)."""

T = TypeVar("T")
_log = logging.getLogger("actors.dp.http")
_ENCODED_SEPARATOR = re.compile("%2f|%5c", re.IGNORECASE)
# A response of at most this many bytes is sent zstd-encoded to a client that accepts it,
# when that makes it smaller by a tenth at least (text does; random data and the large
# packages' files do not, and those stream as they are, with no CPU spent on them).
COMPRESS_MAX = 16 << 20
_PROBE = 64 << 10  # a first slice compressed fast tells whether the rest is worth it
_LEVEL = 9  # measured on the delta bench's text: level 9 ~12% smaller than 3, still >100 MB/s
_SMALL_LEVEL = 19  # for an answer of at most _SMALL bytes (an update's ranges): every byte counts
_SMALL = 1 << 20
_BLOCK_SPAN_MAX = 64 << 10  # a longer run of missing chunks is not worth its block hashes
_TREES = 64  # signature trees kept (a 100 MiB file's: ~5 MB)
_sig_asks = msgspec.msgpack.Decoder(list[rdc.SigAsk])
_data_asks = msgspec.msgpack.Decoder(list[rdc.DataAsk])


class ContentServer:
    """The hierarchy's web server; DPs and MPs register on it once it runs."""

    def __init__(self, home: asyncio.AbstractEventLoop) -> None:
        self._home = home  # the hierarchy's loop, where the libraries and the MPs live
        self._libraries: dict[str, ContentLibrary] = {}
        self._endpoints: dict[str, StateMessageEndpoint] = {}
        self.base_url = ""
        self.requests = 0
        # the signature trees of the files last asked about (an update asks three levels)
        self._trees: OrderedDict[str, rdc.SigTree] = OrderedDict()

    @classmethod
    @asynccontextmanager
    async def open(cls) -> AsyncIterator[ContentServer]:
        """Listen on an ephemeral port of 127.0.0.1 until the block ends, on a thread and
        event loop of its own: serving (``sendfile``) runs beside the downloads and the rest
        of the hierarchy instead of taking turns with them on the caller's loop."""
        server = cls(asyncio.get_running_loop())
        thread = _ServerThread(server._app())
        await anyio.to_thread.run_sync(thread.start)
        try:
            server.base_url = f"http://127.0.0.1:{thread.port}"
            yield server
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(thread.stop)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(f"/{{dp}}/{PKG_SHARE}/{{content_id}}/{{path:.+}}", self._file)
        app.router.add_post(f"/{{dp}}/{SIG_SHARE}/{{content_id}}", self._signatures)
        app.router.add_post(f"/{{dp}}/{PKG_SHARE}/{{content_id}}", self._ranges)
        app.router.add_post("/{mp}/ccm_system/request", self._state_message)
        return app

    async def _at_home(self, work: Awaitable[T]) -> T:
        """Await ``work`` on the hierarchy's loop (the libraries and the MPs live there);
        a handler cancelled here cancels it there."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_coro(work), self._home))

    def serve(self, dp: str, library: ContentLibrary) -> None:
        """Serve the DP's library under ``/<DP>/``."""
        self._libraries[dp.upper()] = library

    def endpoint(self, mp: str, receive: StateMessageEndpoint) -> None:
        """Take state messages posted to ``/<MP>/ccm_system/request``."""
        self._endpoints[mp.upper()] = receive

    @staticmethod
    def content_url(dp: str, content_id: str) -> str:
        """The DPUrl of a content version on a DP, by the DP's name as the reference has it
        (``http://P01DP1.CONTOSO.COM/SMS_DP_SMSPKG$/<ContentID>``): it stays true across
        restarts, while this server's port changes; :meth:`locate` resolves it."""
        return f"http://{dp.upper()}/{PKG_SHARE}/{content_id}"

    def locate(self, url: str) -> str:
        """Where a DP's URL is served now (what name resolution does for a real host)."""
        parts = urlsplit(url)
        if not parts.hostname or not parts.path.startswith("/"):
            raise ValueError(f"not a DP URL: {url!r}")
        return f"{self.base_url}/{parts.hostname.upper()}{parts.path}"

    def mp_url(self, mp: str) -> str:
        return f"{self.base_url}/{mp.upper()}/ccm_system/request"

    # -- handlers ------------------------------------------------------------------------

    def _entry(self, request: web.Request) -> tuple[ContentLibrary, FileEntry]:
        library, files = self._content(request)
        path = request.match_info["path"]
        entry = files.get(path)
        if entry is None:
            raise _refused(request, f"{request.match_info['content_id']} has no file {path!r}")
        return library, entry

    def _content(self, request: web.Request) -> tuple[ContentLibrary, dict[str, FileEntry]]:
        """The library and the files (by path) of the content version the URL names."""
        if _ENCODED_SEPARATOR.search(request.raw_path):
            raise _refused(request, "an encoded path separator")
        dp = request.match_info["dp"].upper()
        content_id = request.match_info["content_id"]
        library = self._libraries.get(dp)
        if library is None:
            raise _refused(request, f"no DP {dp} serves content here")
        try:
            manifest = library.manifest(content_id)
        except ContentLibError:
            raise _refused(request, f"{dp} does not hold {content_id}") from None
        return library, {e.path: e for e in manifest.files}

    async def _file(self, request: web.Request) -> web.StreamResponse:
        library, entry = self._entry(request)
        self.requests += 1
        source = library.file_path(entry.sha256)
        if not source.is_file():
            raise _refused(request, f"the library's copy of {entry.path} is missing")
        if "zstd" in request.headers.get("Accept-Encoding", ""):
            encoded = await self._encoded(request, source, entry.size)
            if encoded is not None:
                return encoded
        # aiohttp answers the Range header (206, or 416 for a range past the end).
        return web.FileResponse(source, chunk_size=1 << 20)

    async def _encoded(self, request: web.Request, source: Path, size: int) -> web.Response | None:
        """The file or its requested range zstd-encoded, if small enough and compressible
        (``Content-Range`` names the range of the file, as for an unencoded answer)."""
        try:
            wanted = request.http_range  # aiohttp's parse of the Range header
        except ValueError:
            return None  # FileResponse answers what is wrong with it
        start, stop, _ = wanted.indices(size)
        if "Range" in request.headers and start >= stop:
            return None
        if stop - start > COMPRESS_MAX:
            return None
        packed = await anyio.to_thread.run_sync(_compress, source, start, stop)
        if packed is None:
            return None
        headers = {"Content-Encoding": "zstd"}
        status = 200
        if "Range" in request.headers:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        return web.Response(
            body=packed, status=status, headers=headers, content_type="application/octet-stream"
        )

    async def _signatures(self, request: web.Request) -> web.Response:
        """RDC signature levels of the version's files: a msgpack list of ``SigAsk``
        in, a list of ``Level`` out (one per ask)."""
        library, files = self._content(request)
        self.requests += 1
        asks = _decode(_sig_asks, await request.read())
        for ask in asks:
            _check_ask(request, files, ask.path, ask.spans)
            if not rdc.LEVEL_SUPER <= ask.level <= rdc.LEVEL_BLOCK:
                raise web.HTTPBadRequest(text=f"no signature level {ask.level}")
            if ask.level == rdc.LEVEL_BLOCK and any(b - a > _BLOCK_SPAN_MAX for a, b in ask.spans):
                raise web.HTTPBadRequest(text="block hashes of a range that long")
        answers: list[rdc.Level] = []
        for ask in asks:
            entry = files[ask.path]
            if ask.level == rdc.LEVEL_BLOCK:
                data = await anyio.to_thread.run_sync(
                    _read_spans, library.file_path(entry.sha256), ask.spans, False
                )
                answers.append(rdc.Level((), b"".join(rdc.block_hashes(d) for d in data)))
                continue
            answers.append((await self._tree(library, entry.sha256)).inside(ask.level, ask.spans))
        return await _answer(request, msgspec.msgpack.encode(answers))

    async def _tree(self, library: ContentLibrary, sha256: str) -> rdc.SigTree:
        tree = self._trees.get(sha256)
        if tree is None:
            sig = await self._at_home(library.signature(sha256))
            tree = await anyio.to_thread.run_sync(rdc.SigTree, sig)
            self._trees[sha256] = tree
            while len(self._trees) > _TREES:
                self._trees.popitem(last=False)
        self._trees.move_to_end(sha256)
        return tree

    async def _ranges(self, request: web.Request) -> web.Response:
        """Byte ranges of the version's files in one answer: a msgpack list of
        ``DataAsk`` in, their bytes concatenated out (zstd-encoded, all together, to a
        client that accepts it, when that makes them smaller)."""
        library, files = self._content(request)
        self.requests += 1
        asks = _decode(_data_asks, await request.read())
        for ask in asks:
            _check_ask(request, files, ask.path, ask.spans)
        if sum(b - a for ask in asks for a, b in ask.spans) > COMPRESS_MAX:
            raise web.HTTPBadRequest(text="more than one answer should carry")
        parts: list[bytes] = []
        for ask in asks:
            source = library.file_path(files[ask.path].sha256)
            parts += await anyio.to_thread.run_sync(_read_spans, source, ask.spans, True)
        return await _answer(request, b"".join(parts))

    async def _state_message(self, request: web.Request) -> web.Response:
        mp = request.match_info["mp"].upper()
        receive = self._endpoints.get(mp)
        if receive is None:
            raise _refused(request, f"no management point {mp} here")
        body = await request.read()
        try:
            await self._at_home(receive(body))
        except BadNotification as exc:
            _log.warning("%s refused a state message: %s", mp, exc)
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.Response(text="OK")


class _ServerThread:
    """The web server's thread: a plain asyncio loop (its ``sendfile`` sends a file's
    bytes from the kernel's cache; uvloop's would read them through Python), started and
    stopped by blocking calls made from a worker thread of the hierarchy's loop."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cmdist http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join()
            raise self._failure

    def stop(self) -> None:
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join()

    def _run(self) -> None:
        # the platform's own loop, even where the embedder installed uvloop's policy
        loop = asyncio.DefaultEventLoopPolicy().new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # the starter raises it
            self._failure = exc
        finally:
            loop.close()
            self._ready.set()

    async def _serve(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.port = runner.addresses[0][1]
            self._done = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._done.wait()
        finally:
            await runner.cleanup()


async def _coro(work: Awaitable[T]) -> T:
    return await work


def _compress(source: Path, start: int, stop: int) -> bytes | None:
    with open(source, "rb") as f:
        f.seek(start)
        probe = f.read(min(stop - start, _PROBE))
        if len(zstandard.ZstdCompressor(level=1).compress(probe)) >= 0.9 * len(probe):
            return None  # random-looking: not worth the CPU
        data = probe + f.read(stop - start - len(probe))
    packed = zstandard.ZstdCompressor(level=_LEVEL).compress(data)
    return packed if len(packed) < 0.9 * len(data) else None


def _decode(decoder: msgspec.msgpack.Decoder[list[T]], body: bytes) -> list[T]:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(text=f"malformed request: {exc}") from exc


def _check_ask(
    request: web.Request, files: dict[str, FileEntry], path: str, spans: tuple[tuple[int, int], ...]
) -> None:
    entry = files.get(path)
    if entry is None:
        raise _refused(request, f"{request.match_info['content_id']} has no file {path!r}")
    try:
        rdc.check_spans(spans, entry.size)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{path}: {exc}") from exc


def _read_spans(path: Path, spans: tuple[tuple[int, int], ...], whole: bool) -> list[bytes]:
    """The bytes of each span (``whole``: a file that ended early is an error)."""
    out: list[bytes] = []
    with open(path, "rb") as f:
        for start, stop in spans:
            f.seek(start)
            data = f.read(stop - start)
            if whole and len(data) != stop - start:
                raise OSError(f"{path} is shorter than its manifest says")
            out.append(data)
    return out


async def _answer(request: web.Request, body: bytes) -> web.Response:
    """A POST's answer, zstd-encoded for a client that accepts it if that saves bytes."""
    headers: dict[str, str] = {}
    if "zstd" in request.headers.get("Accept-Encoding", "") and len(body) >= 64:
        packed = await anyio.to_thread.run_sync(_pack, body)
        if packed is not None:
            body, headers = packed, {"Content-Encoding": "zstd"}
    return web.Response(body=body, headers=headers, content_type="application/octet-stream")


def _pack(data: bytes) -> bytes | None:
    probe = data[:_PROBE]
    if len(zstandard.ZstdCompressor(level=1).compress(probe)) >= 0.97 * len(probe):
        return None  # random-looking: not worth the CPU
    level = _SMALL_LEVEL if len(data) <= _SMALL else _LEVEL
    packed = zstandard.ZstdCompressor(level=level).compress(data)
    return packed if len(packed) < len(data) else None


def _refused(request: web.Request, why: str) -> web.HTTPNotFound:
    _log.warning("404 %s: %s", quote(request.path), why)
    return web.HTTPNotFound(text=why)
