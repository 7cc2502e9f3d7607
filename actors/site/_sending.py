"""A sending thread's try: what a cancel stops, what it moves, and the chunked copy over a
link into a DP's ``SMS_DP$`` that resumes from the staged bytes after a cut."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec

from actors.errors import TransferError
from actors.network import NetworkLink
from actors.site.messages import (
    TransferProgress,
)
from actors.sitedb import (
    DistributionJobRow,
    DistributionPointRow,
)
from contentlib import ThreadHop

__all__ = ["RetryJob", "Send", "transmit"]

# Chunk sizes: the reference writes 983040-byte blocks to a throttled share; a local,
# unthrottled copy goes in large blocks, one worker-thread hop each.
_LINK_CHUNK = 983040
_LOCAL_CHUNK = 64 << 20
# A file up to this size is written on the caller's ThreadHop (a light hop for small
# writes); a bigger one in the thread pool, where it holds up no small write behind it.
_SMALL_FILE = 1 << 20


class RetryJob(msgspec.Struct, frozen=True):
    """Scheduled by PkgXferMgr itself when a job failed and its retry delay has passed
    (and at start for the jobs a previous run left). ``action`` is the job's JobAction."""

    job_id: int
    action: int = 0


class Send:
    """A running try of an add or redistribute job: what a cancel stops, and what the try
    moves (bytes over the link, whole files and deltas apart, and its progress events).

    ``bytes_full`` / ``bytes_delta`` count the bytes that crossed the link in this try
    (a chunk counts once it is written to the DP's share, even if the link is cut while it
    is on its way). ``sent`` / ``total`` are the progress bar: ``sent`` also counts bytes
    an earlier, cut try left staged, which this try resumes after (see TransferProgress).
    """

    __slots__ = (
        "_interval",
        "_last",
        "_now",
        "_publish",
        "bytes_delta",
        "bytes_full",
        "committing",
        "dp",
        "job",
        "scope",
        "sent",
        "total",
    )

    def __init__(
        self,
        job: DistributionJobRow,
        dp: DistributionPointRow,
        publish: Callable[[TransferProgress], Awaitable[None]],
        now: Callable[[], float],
        interval: float,
    ) -> None:
        self.job = job
        self.dp = dp
        self.scope = anyio.CancelScope()
        self.committing = False
        self.bytes_full = 0
        self.bytes_delta = 0
        self.sent = 0
        self.total = 0
        self._publish = publish
        self._now = now
        self._interval = interval
        self._last: float | None = None  # clock time of the last event (None: none yet)

    def cancel(self) -> bool:
        """Stop the send at its next chunk (or DP request); False once it is committing."""
        if self.committing:
            return False
        self.scope.cancel()
        return True

    async def commit(self) -> None:
        """The point of no return, before the version is added to the DP: a cancel that
        came first stops the send here; one that comes after is refused."""
        await anyio.lowlevel.checkpoint()
        self.committing = True

    def plan(self, nbytes: int) -> None:
        """``nbytes`` more (or, negative, fewer) to send than planned so far."""
        self.total += nbytes

    def count(self, crossed: int, staged_before: int, *, delta: bool) -> None:
        """A chunk of ``crossed`` bytes crossed the link; ``staged_before`` bytes of the
        same file were found staged by an earlier try (first chunk of a resumed file)."""
        if delta:
            self.bytes_delta += crossed
        else:
            self.bytes_full += crossed
        self.sent += crossed + staged_before

    async def report(self, *, delta: bool) -> None:
        """Publish the progress if it is due: the first chunk, the last, or one
        ``interval`` after the previous event."""
        now = self._now()
        last = self._last
        if last is not None and self.sent < self.total and now - last < self._interval:
            return
        self._last = now
        job = self.job
        await self._publish(
            TransferProgress(
                job.pkg_id,
                job.package_version,
                self.dp.server_name,
                self.sent,
                max(self.total, self.sent),
                delta,
            )
        )


async def transmit(
    source: Path | bytes,
    size: int,
    staged: Path,
    link: NetworkLink,
    log: Callable[[str], None],
    send: Send,
    *,
    delta: bool,
    shown: str = "",
    hop: ThreadHop | None = None,
) -> None:
    """Copy ``source`` to the staged file over ``link``, resuming after a cut transfer.

    Bytes a cut transfer left in the staged file are kept and the copy goes on from their
    end ("Attempt to write N bytes ... at position P"); the DP verifies the whole file's
    hash before it is used, so a damaged remainder costs one more try, never bad content.
    Each chunk is counted on ``send`` (before the link's wait, so a cut chunk counts) and
    its progress reported after it. ``shown``: the file as the log names it (the DP's
    share). A cancel lands between chunks: a chunk being written
    in the worker thread is finished first, so nothing writes the file after the cancel.
    ``hop``: where a small chunk is written (a whole small file: one light hop).
    """
    await link.open()
    chunk = _LINK_CHUNK if link.throttled else _LOCAL_CHUNK
    resume_at: int | None = None  # found in the worker thread, with the first chunk
    while True:  # at least once: an empty file is written too
        started = time.perf_counter()
        allowed = link.allowance(chunk)
        if hop is not None and size <= _SMALL_FILE:
            position, n = await hop.run(_write_chunk, source, size, staged, resume_at, allowed)
        else:
            position, n = await anyio.to_thread.run_sync(
                _write_chunk, source, size, staged, resume_at, allowed
            )
        where = shown or staged.name
        ticks = round((time.perf_counter() - started) * 1000)  # milliseconds, as the product's
        log(f"~Attempt to write {n} bytes to {where} at position {position}")
        log(f"~Wrote {n} bytes to {where} at position {position} in {ticks} ticks")
        send.count(n, position if resume_at is None else 0, delta=delta)
        position += n
        resume_at = position
        await link.carry(n)
        await send.report(delta=delta)
        if position >= size:
            return


def _write_chunk(
    source: Path | bytes, size: int, staged: Path, position: int | None, allowed: int
) -> tuple[int, int]:
    """Write the next chunk (at most ``allowed`` bytes); returns where it went and its size."""
    if position is None:
        position = _resume_position(staged, size)
    n = min(allowed, size - position)
    _write_range(source, staged, position, n)
    return position, n


def _resume_position(staged: Path, size: int) -> int:
    try:
        have = staged.stat().st_size
    except FileNotFoundError:
        return 0
    if have > size:
        staged.unlink()
        return 0
    return have


def _write_range(source: Path | bytes, staged: Path, position: int, n: int) -> None:
    staged.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT
    fd = os.open(staged, flags, 0o644)
    try:
        os.ftruncate(fd, position)  # drop anything past the resume point
        if isinstance(source, bytes):
            os.pwrite(fd, source[position : position + n], position)
            return
        with open(source, "rb") as src:
            src.seek(position)
            offset = position
            remaining = n
            while remaining:
                block = src.read(min(remaining, 8 << 20))
                if not block:
                    raise TransferError(f"{source} ended before {position + n} bytes")
                os.pwrite(fd, block, offset)
                offset += len(block)
                remaining -= len(block)
    finally:
        os.close(fd)
