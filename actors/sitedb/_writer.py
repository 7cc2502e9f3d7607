"""The single writer of a site database, with group commit.

One task owns the write connection. Callers submit operations (plain functions of a
``sqlite3.Connection``) and await their results. The writer takes everything queued (up
to ``max_batch``), runs it in ONE worker-thread hop inside ONE transaction and commits
once: 100 concurrent callers cost one commit, not 100.

Why a bare ``sqlite3`` connection driven from the writer's own thread rather than aiosqlite
here: aiosqlite crosses to its thread once per statement (~100-180 us each), which caps a
writer at a few thousand operations per second. Readers use aiosqlite (see database.py).

Failure isolation: a batch first runs optimistically, with no savepoint per operation. If
an operation raises, the transaction is rolled back and the batch runs again with each
operation in its own savepoint, so the failing one is undone alone, its caller gets the
exception, and the others commit. Hence the rule for operations: **touch only the
connection** (and read-only checks such as ``os.stat``), because one may run twice. If the
commit itself fails, every caller in the batch gets that error, nothing of the batch is
written, and the writer goes on.

Callers wait on asyncio futures (the bus is asyncio-only too): at these rates the cost of
the waiting primitive matters. For the same reason the batches run on a thread of the
writer's own (it owns the connection), fed by a queue and answering with
``call_soon_threadsafe``: a thread pool's hop (limiter, checkpoints, cancel scope) cost
more event-loop time than a small batch's SQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskStatus

__all__ = ["SiteDatabaseClosed", "WriteOp", "Writer"]

T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], T]


class SiteDatabaseClosed(RuntimeError):
    """A write was submitted after the database closed."""


class _Pending(Generic[T]):
    __slots__ = ("error", "finished", "fn", "future", "result")

    def __init__(self, fn: WriteOp[T], future: asyncio.Future[T] | None) -> None:
        self.fn = fn
        self.future = future
        self.result: T | None = None
        self.error: BaseException | None = None
        self.finished = False  # set by the writer thread once the batch is over


class _Batch:
    __slots__ = ("done", "items", "loop", "waiter")

    def __init__(self, items: list[_Pending[Any]], loop: asyncio.AbstractEventLoop) -> None:
        self.items = items
        self.loop = loop
        self.waiter: asyncio.Future[None] = loop.create_future()
        self.done = False


def _batch_done(batch: _Batch) -> None:
    batch.done = True
    if not batch.waiter.done():
        batch.waiter.set_result(None)


class Writer:
    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        max_batch: int = 1000,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._conn = conn
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.max_batch = max_batch
        # Unbounded, but every caller awaits its own result, so its depth is bounded by the
        # number of concurrent callers.
        self._queue: deque[_Pending[Any]] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._closed = False
        self._batches: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        # (probe, listener): the probe reads after each commit on the writer's thread, the
        # listener gets its value in the event loop (who needs no read learns it is moot).
        self._probes: tuple[tuple[WriteOp[Any], Callable[[Any], None]], ...] = ()
        self._probed: list[Any] = []
        self.commits = 0
        self.operations = 0

    def add_commit_probe(self, probe: WriteOp[T], listener: Callable[[T], None]) -> None:
        """After every commit, ``probe(conn)`` (a read, outside the transaction, on the
        writer's thread) and then ``listener(value)`` in the event loop (keep both tiny):
        a listener can tell from it whether the commit concerns it, without a read of its
        own. A probe that raises is skipped for that commit."""
        self._probes = (*self._probes, (probe, listener))

    def remove_commit_probe(self, listener: Callable[[Any], None]) -> None:
        self._probes = tuple(p for p in self._probes if p[1] != listener)

    async def submit(self, fn: WriteOp[T]) -> T:
        """Run ``fn(conn)`` in the next group-committed transaction and return its result.

        A caller cancelled while waiting does not take the write back: it may still commit.
        """
        if self._closed:
            raise SiteDatabaseClosed("the site database is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(fn, future))
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        return await future

    def close(self) -> None:
        """Stop taking writes; what is queued still runs, then :meth:`run` returns."""
        self._closed = True
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._serve, name="sitedb writer", daemon=True).start()
        task_status.started()
        try:
            while True:
                if not queue:
                    if self._closed:
                        return
                    self._wakeup = loop.create_future()
                    try:
                        await self._wakeup
                    finally:
                        self._wakeup = None
                    continue
                batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
                try:
                    await self._in_thread(batch, loop)
                finally:
                    for p in batch:
                        self._settle(p)
                self.commits += 1
                self.operations += len(batch)
                probed, self._probed = self._probed, []
                for listener, value in probed:
                    listener(value)
        finally:
            self._closed = True
            self._batches.put(None)  # the thread ends after the batch it may be running
            while queue:  # cancelled with writes still queued: they never ran
                self._settle(queue.popleft())

    async def _in_thread(self, items: list[_Pending[Any]], loop: asyncio.AbstractEventLoop) -> None:
        """Run a batch on the writer's thread. Not abandoned on cancel: a batch is never
        torn, its callers always hear back (the cancel goes on once it has ended)."""
        batch = _Batch(items, loop)
        self._batches.put(batch)
        try:
            await batch.waiter
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                while not batch.done:
                    batch.waiter = loop.create_future()
                    await batch.waiter
            raise

    def _serve(self) -> None:
        """The writer's thread: batches in order, until :meth:`run` ends."""
        while (batch := self._batches.get()) is not None:
            try:
                self._run_batch(batch.items)
            finally:
                with suppress(RuntimeError):  # the loop is closed: nobody waits any more
                    batch.loop.call_soon_threadsafe(_batch_done, batch)

    @staticmethod
    def _settle(p: _Pending[Any]) -> None:
        future = p.future
        if future is None or future.done():  # the caller was cancelled: nobody to tell
            return
        if p.error is not None:
            future.set_exception(p.error)
        elif not p.finished:
            future.set_exception(SiteDatabaseClosed("the database closed before the write ran"))
        else:
            future.set_result(p.result)

    def _begin(self) -> None:
        """A transaction whose triggers stamp rows with the clock's time (``SiteClock``:
        SQLite's own ``'now'`` would be a second clock beside the hierarchy's)."""
        self._conn.execute("BEGIN IMMEDIATE")
        now = self._clock().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        self._conn.execute("UPDATE SiteClock SET Now = ?", (now,))

    def _probe(self, conn: sqlite3.Connection) -> None:
        """The commit probes' values, for the event loop to hand to their listeners."""
        probed = []
        for probe, listener in self._probes:
            try:
                probed.append((listener, probe(conn)))
            except Exception:  # a probe is a hint: its listener keeps its own poll
                continue
        self._probed = probed

    def _run_batch(self, batch: list[_Pending[Any]]) -> None:
        conn = self._conn
        try:
            self._begin()
            try:
                for p in batch:  # optimistic: no savepoints
                    p.result = p.fn(conn)
            except Exception:
                conn.execute("ROLLBACK")
                self._begin()
                for p in batch:  # again, each in a savepoint, to undo a failure alone
                    p.result, p.error = None, None
                    conn.execute("SAVEPOINT op")
                    try:
                        p.result = p.fn(conn)
                    except Exception as e:
                        conn.execute("ROLLBACK TO op")
                        p.error = e
                    conn.execute("RELEASE op")
            # Every operation failed: not even the clock's time is kept.
            conn.execute("ROLLBACK" if all(p.error is not None for p in batch) else "COMMIT")
            self._probe(conn)
        except Exception as e:  # the transaction itself failed (disk full, I/O error, ...)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for p in batch:
                p.result, p.error = None, e
        for p in batch:
            p.finished = True
