"""``distmgr.box\\incoming``: the STA files PkgXferMgr's sending threads drop and DistMgr's
replication processing thread processes and deletes.

A file's name is the job's ID and the status in hex (job 0x241, status 3:
``00002413.STA``), so names sort in the order a job's statuses were sent. A file is not
synced: the job's row stays until DistMgr stores the job's final status (and deletes the
job in the same commit), so a file a crash tore or lost is sent again by its job.

The file operations are a few tens of microseconds each and run on the inbox's own worker
thread (:class:`~contentlib.ThreadHop`), not through a thread pool. Not on the event loop:
tried, an unlink or a rename waits for the file system's journal when other processes
sync, and a sampling profile of 300 packages had the loop blocked there ~6% of the time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import msgspec

from actors.site.messages import TransferStatus
from contentlib import ThreadHop, atomic_write

__all__ = ["StatusInbox"]

_decoder = msgspec.msgpack.Decoder(TransferStatus)


class StatusInbox:
    """A site server's ``inboxes/distmgr.box/incoming`` folder."""

    def __init__(self, server_root: Path) -> None:
        self.path = server_root / "inboxes" / "distmgr.box" / "incoming"
        self._folder = f"{self.path}{os.sep}"
        self._hop = ThreadHop("distmgr.box")
        self._made = False

    def file_for(self, job_id: int, status: int) -> Path:
        return self.path / f"{job_id:07X}{status:X}.STA"

    def holds_any(self, job_id: int, statuses: Iterable[int]) -> bool:
        """Whether an STA of the job with one of these statuses waits here (a ``stat`` each,
        on the caller's thread: asked once per job)."""
        folder = self._folder
        for status in statuses:
            try:
                os.stat(f"{folder}{job_id:07X}{status:X}.STA")
            except (FileNotFoundError, NotADirectoryError):
                continue
            return True
        return False

    async def drop(self, sta: TransferStatus, *, durable: bool = False) -> Path:
        """Write the STA file whole (``durable``: synced before this returns)."""
        path = self.file_for(sta.job_id, sta.status)
        data = msgspec.msgpack.encode(sta)
        if not self._made:
            await self._hop.run(partial(self.path.mkdir, parents=True, exist_ok=True))
            self._made = True
        await self._hop.run(partial(atomic_write, path, data, durable=durable))
        return path

    def pending(self) -> list[Path]:
        """STA files not yet processed, in the order they were sent."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p.suffix == ".STA")

    async def read(self, path: Path) -> TransferStatus | None:
        """The file's status; None for a file that is gone or unreadable (a torn
        non-durable STA after a crash: its job is still there and sends it again)."""
        try:
            return _decoder.decode(await self._hop.run(path.read_bytes))
        except (FileNotFoundError, msgspec.DecodeError):
            return None

    async def remove(self, path: Path) -> None:
        await self._hop.run(partial(path.unlink, missing_ok=True))
