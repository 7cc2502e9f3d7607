"""Group commit of DataLib manifests: one filesystem sync for every manifest waiting.

A manifest makes a content version visible, so it is written last and durably: its bytes
(and the FileLib files it names) on disk before its name appears, and its name on disk
before the caller hears it is committed. Written one at a time that is two syncs per
version; here every manifest submitted while a batch is being written goes in the next
batch, in one worker-thread hop: the temp files written, ONE ``syncfs`` (their bytes and
every file the versions name, which ingests and receivers store unsynced), the renames,
the PkgLib entries (not synced: rebuilt from DataLib on open), ONE fsync of each DataLib
folder the batch wrote into.
Nobody returns before the sync that covers their manifest has finished.

``syncfs`` makes the whole filesystem durable, so a batch is per filesystem, not per
library: every library of an event loop on one filesystem (a site's and its DPs') shares
one committer (:func:`for_folder`), and one sync covers them all.

No task of its own: the first caller to find no batch running writes one (everything
queued once the event loop's ready work brings no more, its own manifest included), then
hands the lead to the first caller still queued. A batch is never abandoned half way:
waiting is shielded from cancellation (the wait is one sync long), so the lead is always
passed on.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.to_thread

from contentlib import _fs

__all__ = ["ManifestCommitter", "for_folder"]

Thread = Callable[[Callable[[], None]], Awaitable[None]]


class _Item:
    __slots__ = ("data", "done", "error", "path", "pkglib", "tmp", "wake")

    def __init__(self, path: Path, data: bytes, pkglib: tuple[Path, bytes]) -> None:
        self.path = path
        self.data = data
        self.pkglib = pkglib
        self.tmp: Path | None = None
        self.error: BaseException | None = None
        self.done = False
        self.wake = anyio.Event()


async def _to_thread(fn: Callable[[], None]) -> None:
    await anyio.to_thread.run_sync(fn)


class ManifestCommitter:
    """Writes manifests (into DataLib folders of one filesystem) in group-committed batches."""

    def __init__(self, thread: Thread = _to_thread) -> None:
        self._thread = thread
        self._queue: list[_Item] = []
        self._writing = False
        self.batches = 0
        self.manifests = 0

    async def commit(self, path: Path, data: bytes, pkglib: tuple[Path, bytes]) -> None:
        """Write ``data`` as ``path`` durably, with the PkgLib file ``pkglib`` beside it.

        On an error (ENOSPC...) neither is written and the error is raised to this caller
        alone; a failed sync fails every manifest of its batch."""
        item = _Item(path, data, pkglib)
        self._queue.append(item)
        with anyio.CancelScope(shield=True):
            while not item.done:
                if not self._writing:
                    await self._lead()
                else:  # woken when its batch is written, or to lead the next one
                    item.wake = anyio.Event()
                    await item.wake.wait()
        if item.error is not None:
            raise item.error

    async def _lead(self) -> None:
        self._writing = True
        await self._gather()
        batch, self._queue = self._queue, []
        try:
            await self._thread(lambda: _write_batch(batch))
        finally:
            self._writing = False
            self.batches += 1
            self.manifests += len(batch)
            for item in batch:
                item.done = True
                item.wake.set()
            if self._queue:
                nxt = self._queue[0]
                nxt.wake.set()

    async def _gather(self) -> None:
        """Let the event loop run what is ready before the batch is taken, for as long as
        that brings more manifests: a package's DPs finish within microseconds of each
        other, and one sync for all of them beats a second sync for all but the first
        (one loop pass costs microseconds, a sync milliseconds)."""
        for _ in range(_GATHER_PASSES):
            queued = len(self._queue)
            await asyncio.sleep(0)
            if len(self._queue) == queued:
                return


_GATHER_PASSES = 8

# One committer per event loop and filesystem (a loop's libraries on one disk share syncs).
_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, ManifestCommitter]] = (
    weakref.WeakKeyDictionary()
)


def for_folder(folder: Path) -> ManifestCommitter:
    """The running event loop's committer for folder's filesystem."""
    by_device = _shared.setdefault(asyncio.get_running_loop(), {})
    device = os.stat(folder).st_dev
    committer = by_device.get(device)
    if committer is None:
        committer = by_device[device] = ManifestCommitter()
    return committer


def _write_batch(batch: list[_Item]) -> None:
    """The blocking part of a batch; each item's outcome is set on it."""
    live = []
    for item in batch:
        tmp = _fs.temp_name(item.path.parent)
        try:
            _fs.write_file(tmp, item.data)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            item.error = e
        else:
            item.tmp = tmp
            live.append(item)
    if not live:
        return
    try:
        _fs.sync_filesystem(live[0].path.parent)  # the manifests' bytes and every file they name
    except BaseException as e:
        _fail(live, e)
        return
    renamed = []
    for item in live:
        assert item.tmp is not None
        try:
            os.replace(item.tmp, item.path)
        except BaseException as e:
            item.tmp.unlink(missing_ok=True)
            item.error = e
            continue
        try:
            _fs.atomic_write(*item.pkglib, durable=False)
        except BaseException as e:  # not committed: no manifest either
            item.path.unlink(missing_ok=True)
            item.error = e
            continue
        renamed.append(item)
    for folder in {item.path.parent for item in live}:  # the new names (and failed unlinks)
        here = [item for item in renamed if item.path.parent == folder]
        try:
            _fs.fsync_dir(folder)
        except BaseException as e:
            for item in here:
                item.path.unlink(missing_ok=True)
            _fail(here, e)


def _fail(items: list[_Item], error: BaseException) -> None:
    for item in items:
        if item.tmp is not None:
            item.tmp.unlink(missing_ok=True)
        item.error = error
