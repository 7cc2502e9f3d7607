"""Content over HTTP: the one web server of a running hierarchy, on 127.0.0.1.

It stands in for the IIS of every DP and management point: ``/<DP>/SMS_DP_SMSPKG$/
<ContentID>/<file>`` serves a file of a content version the DP's library holds (range
requests included, so a pull DP resumes and fetches only the chunks it lacks),
``/<DP>/SMS_DP_SMSSIG$/<ContentID>/<file>`` its RDC signature, and ``/<MP>/ccm_system/
request`` takes a state message for a site's MP relay. Routing is by the DP's name in the
path (one port for all, as one host would have one IIS per machine).

aiohttp on both ends, chosen by measurement on loopback (a 100 MiB file: ~530 MB/s with
4 MiB reads vs ~365 MB/s for ``shutil.copyfile`` of the same file, same run). A file is
served only through its version's manifest, from the library's hash-named copy: a path
the manifest does not list (``..``, an encoded separator, another DP's share, a version
the DP does not hold) is a 404 and a log line, and nothing outside the library is read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import quote, urlsplit

import msgspec
from aiohttp import web

from actors.dp._rdcsig import chunk_slices, parse_ranges, super_signature
from actors.errors import BadNotification
from contentlib import ContentLibError, ContentLibrary, FileEntry

__all__ = ["PKG_SHARE", "SIG_SHARE", "ContentServer", "StateMessageEndpoint"]

PKG_SHARE = "SMS_DP_SMSPKG$"
SIG_SHARE = "SMS_DP_SMSSIG$"

StateMessageEndpoint = Callable[[bytes], Awaitable[None]]
"""A management point's relay: takes a state message's body (raises to refuse it)."""

_log = logging.getLogger("actors.dp.http")
_ENCODED_SEPARATOR = re.compile("%2f|%5c", re.IGNORECASE)


class ContentServer:
    """The hierarchy's web server; DPs and MPs register on it once it runs."""

    def __init__(self) -> None:
        self._libraries: dict[str, ContentLibrary] = {}
        self._endpoints: dict[str, StateMessageEndpoint] = {}
        self.base_url = ""
        self.requests = 0

    @classmethod
    @asynccontextmanager
    async def open(cls) -> AsyncIterator[ContentServer]:
        """Listen on an ephemeral port of 127.0.0.1 until the block ends."""
        server = cls()
        app = web.Application()
        app.router.add_get(f"/{{dp}}/{PKG_SHARE}/{{content_id}}/{{path:.+}}", server._file)
        app.router.add_get(f"/{{dp}}/{SIG_SHARE}/{{content_id}}/{{path:.+}}", server._signature)
        app.router.add_post("/{mp}/ccm_system/request", server._state_message)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            server.base_url = f"http://127.0.0.1:{port}"
            yield server
        finally:
            await runner.cleanup()

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
        if _ENCODED_SEPARATOR.search(request.raw_path):
            raise _refused(request, "an encoded path separator")
        dp = request.match_info["dp"].upper()
        content_id = request.match_info["content_id"]
        path = request.match_info["path"]
        library = self._libraries.get(dp)
        if library is None:
            raise _refused(request, f"no DP {dp} serves content here")
        try:
            manifest = library.manifest(content_id)
        except ContentLibError:
            raise _refused(request, f"{dp} does not hold {content_id}") from None
        for entry in manifest.files:
            if entry.path == path:
                return library, entry
        raise _refused(request, f"{content_id} on {dp} has no file {path!r}")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        library, entry = self._entry(request)
        self.requests += 1
        source = library.file_path(entry.sha256)
        if not source.is_file():
            raise _refused(request, f"the library's copy of {entry.path} is missing")
        # aiohttp answers the Range header (206, or 416 for a range past the end).
        return web.FileResponse(source, chunk_size=1 << 20)

    async def _signature(self, request: web.Request) -> web.Response:
        library, entry = self._entry(request)
        self.requests += 1
        signature = await library.signature(entry.sha256)
        # ?level=2: the super-chunks; ?chunks=a-b,..: those chunks' signatures; else all.
        if request.query.get("level") == "2":
            body = msgspec.msgpack.encode(super_signature(signature))
        elif "chunks" in request.query:
            try:
                ranges = parse_ranges(request.query["chunks"])
            except ValueError as exc:
                raise web.HTTPBadRequest(text=str(exc)) from exc
            body = msgspec.msgpack.encode(chunk_slices(signature, ranges))
        else:
            body = msgspec.msgpack.encode(signature)
        return web.Response(body=body, content_type="application/octet-stream")

    async def _state_message(self, request: web.Request) -> web.Response:
        mp = request.match_info["mp"].upper()
        receive = self._endpoints.get(mp)
        if receive is None:
            raise _refused(request, f"no management point {mp} here")
        body = await request.read()
        try:
            await receive(body)
        except BadNotification as exc:
            _log.warning("%s refused a state message: %s", mp, exc)
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.Response(text="OK")


def _refused(request: web.Request, why: str) -> web.HTTPNotFound:
    _log.warning("404 %s: %s", quote(request.path), why)
    return web.HTTPNotFound(text=why)
