"""Sender (``SMS_LAN_SENDER``): send requests to other sites, over the link between them.

A send request writes the package file into the destination's ``SMS_SITE`` share
(``inboxes/despoolr.box/receive``) as ``<request>.PCK`` in chunks through the link's
bandwidth, latency and faults, then the instruction as ``<request>.TMP``, renamed to
``<request>.SNI`` last: the despooler takes only ``.SNI`` files, so it never sees half a
send. A cut send resumes from the bytes already at the remote end; a remote ``.SNI`` means
an earlier run finished. At most ``sending_threads_per_site`` requests per destination and
``sending_threads_total`` in all run at once, taken in package priority order (then first
come, see ``_capacity``); a failed try is retried ``sender_retry_count`` times,
``sender_retry_delay`` apart. How far each request got is kept in the site's send request
list, which the scheduler reads for its periodic status line.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import anyio

from actors._crashpoints import crash_point
from actors.config import Settings
from actors.errors import TransferError
from actors.network import NetworkLink
from actors.site._capacity import SendingCapacity, SendRequestList, SentBytes
from actors.site._paths import receive_box
from actors.site._sharewatch import ShareWatch
from actors.site.messages import SendRequest, SendResult
from actors.status import CMTraceLog, Component
from bus import handler

__all__ = ["Sender"]

_CHUNK = 256 << 10
_LOCAL_CHUNK = 64 << 20


def _copy_range(src: Path, dst: Path, position: int, n: int, sync: bool) -> None:
    """Bytes ``position`` to ``position + n`` of ``src`` into ``dst`` at the same place, in
    the kernel (``sendfile``); anything ``dst`` held past ``position`` goes first (resume
    from what is there, never past it). ``sync``: the file is synced after."""
    with open(src, "rb") as source:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, position)
            os.lseek(fd, position, os.SEEK_SET)
            done = 0
            while done < n:
                copied = os.sendfile(fd, source.fileno(), position + done, n - done)
                if copied == 0:
                    raise TransferError(f"{src} ended before {position + n} bytes")
                done += copied
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)


def _copy_file(src: Path, dst: Path) -> int:
    """``src`` written whole to ``dst``, synced; its size."""
    data = src.read_bytes()
    with open(dst, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return len(data)


class Sender(Component):
    """``<SITE>/Sender``."""

    workers = 64  # requests wait here for capacity, not in the scheduler
    request_timeout = None

    def __init__(
        self,
        *,
        site: str,
        settings: Settings,
        links: Callable[[str], NetworkLink],
        server_root: Callable[[str], Path],
        watch: ShareWatch | None = None,
        log: CMTraceLog | None = None,
    ) -> None:
        self.site = site
        self._watch = watch
        self.settings = settings
        self._links = links
        self._server_root = server_root
        self.trace_log = log
        self.capacity = SendingCapacity(
            settings.sending_threads_per_site, settings.sending_threads_total
        )
        self.requests = SendRequestList()  # shared with the site's scheduler
        self.bytes_on_links = 0
        self._thread_ids = itertools.count(0x1150)  # numbered as the product's log shows one

    @property
    def max_active_per_site(self) -> int:
        """The most sending threads that ran at once to one destination."""
        return self.capacity.max_used_per_site

    @property
    def max_active_total(self) -> int:
        """The most sending threads that ran at once in all."""
        return self.capacity.max_used_total

    @handler
    async def send_request(self, msg: SendRequest) -> SendResult:
        dest = msg.dest_site
        entry = self.requests.open(msg.send_request_id, 0)
        self.trace(f"Found send request.  ID: {msg.send_request_id}, Dest Site: {dest}~")
        self.trace(
            "Checking for site-specific sending capacity.  Used"
            f" {self.capacity.used(dest)} out of {self.settings.sending_threads_per_site}.~"
        )
        async with self.capacity.thread(dest, msg.priority):
            self.trace(f"~Created sending thread (Thread ID = {next(self._thread_ids):X})")
            result = await self._send_with_retries(msg, entry)
        entry.state = "Completed" if result.ok else "Failed"
        return result

    async def _send_with_retries(self, msg: SendRequest, entry: SentBytes) -> SendResult:
        start = self.clock.now()
        moved = [0]  # bytes on the link, every try (a cut one included)
        reason = ""
        for attempt in range(self.settings.sender_retry_count + 1):
            if attempt:
                entry.state = "Retry"
                await self.clock.sleep(self.settings.sender_retry_delay)
            entry.state = "Active"
            try:
                await self._send_once(msg, moved, entry)
            except (TransferError, OSError) as exc:
                reason = str(exc)
                self.trace(f"~Failed to send to site {msg.dest_site}: {reason}", severity="W")
                continue
            self.trace("~Sending completed successfully")
            return SendResult(True, moved[0], self.clock.now() - start)
        return SendResult(False, moved[0], self.clock.now() - start, reason)

    async def _send_once(self, msg: SendRequest, moved: list[int], entry: SentBytes) -> None:
        """One try; ``moved[0]`` counts the bytes it puts on the link, ``entry.sent`` the
        package file's bytes at the remote end."""
        dest = msg.dest_site
        remote = receive_box(self._server_root(dest))
        server = remote.parent.parent.parent.name  # the destination's site server
        share = f"\\\\{server}\\SMS_SITE\\{msg.send_request_id}"
        pck, tmp, sni = (remote / f"{msg.send_request_id}.{ext}" for ext in ("PCK", "TMP", "SNI"))
        self.trace("~Trying the No. 1 address (out of 1)")
        self.trace(f"~Package file = {msg.package_file}")
        self.trace(f"~Instruction file = {msg.instruction_file}")
        for ext in ("PCK", "SNI", "TMP"):
            self.trace(f"~Checking for remote file {share}.{ext}")
        if sni.exists():
            entry.sent = entry.size
            return  # an earlier run renamed it: the request is done
        link = self._links(dest)
        await link.open()
        remote.mkdir(parents=True, exist_ok=True)
        size = os.stat(msg.package_file).st_size
        offset = min(pck.stat().st_size, size) if pck.exists() else 0
        entry.size, entry.sent = size, offset
        self.trace(f"~Attempt to create/open the remote file {share}.PCK")
        self.trace(f"~Created/opened the remote file {share}.PCK")
        self.trace(f"~Sending Started [{msg.package_file}]")
        # a throttled link in small chunks (each waits out its bandwidth); a local path in
        # one: a worker thread hop per chunk, the file synced with the last one
        chunk = _CHUNK if link.throttled else _LOCAL_CHUNK
        while True:  # at least once: the remote file is created even when empty
            want = min(chunk, size - offset)
            allowed = link.allowance(want)
            self.trace(f"~Attempt to write {want} bytes to {share}.PCK at position {offset}")
            last = offset + allowed >= size
            await anyio.to_thread.run_sync(
                _copy_range, Path(msg.package_file), pck, offset, allowed, last
            )
            try:
                await link.carry(allowed)
            finally:
                moved[0] += allowed
                self.bytes_on_links += allowed
            offset += allowed
            entry.sent = offset
            self.trace(f"~Wrote {allowed} bytes to {share}.PCK at position {offset - allowed}")
            if last:
                break
        crash_point("sender.package_written")  # the PCK is there, the instruction is not
        self.trace(f"~Sending completed [{msg.package_file}]")
        self.trace(
            f"~Finished sending SWD package {msg.pkg_id} version {msg.version} to site {dest}"
        )
        self.trace(f"~Sending Started [{msg.instruction_file}]")
        sent = await anyio.to_thread.run_sync(_copy_file, Path(msg.instruction_file), tmp)
        await link.carry(sent)
        moved[0] += sent
        self.bytes_on_links += sent
        self.trace(f"~Sending completed [{msg.instruction_file}]")
        self.trace(f"~Renaming remote file {share}.TMP to {share}.SNI")
        os.replace(tmp, sni)
        if self._watch is not None:
            self._watch.changed(remote, sni.name)  # the destination's despooler looks now
        self.trace(f"~Rename completed [{share}.TMP]")
