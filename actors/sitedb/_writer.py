"""The single writer of a site database, with group commit.

One task owns the write connection. Callers submit operations (plain functions of a
``sqlite3.Connection``) and await their results. The writer takes everything queued (up
to ``max_batch``), runs it in ONE worker-thread hop inside ONE transaction, each operation
in its own savepoint, and commits once: 100 concurrent callers cost one commit, not 100.

Why a bare ``sqlite3`` connection driven through ``anyio.to_thread`` rather than aiosqlite
here: aiosqlite crosses to its thread once per statement (~100-180 us each), which caps a
writer at a few thousand operations per second. Readers use aiosqlite (see database.py).

An operation that raises is rolled back to its savepoint and its caller gets the
exception; the others in the batch still commit. If the commit itself fails, every caller
in the batch gets that error and nothing of the batch is written; the writer goes on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["SiteDatabaseClosed", "WriteOp", "Writer"]

T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], T]


class SiteDatabaseClosed(RuntimeError):
    """A write was submitted after the database closed."""


class _Pending(Generic[T]):
    __slots__ = ("done", "error", "finished", "fn", "result")

    def __init__(self, fn: WriteOp[T]) -> None:
        self.fn = fn
        self.done = anyio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.finished = False


class Writer:
    def __init__(self, conn: sqlite3.Connection, *, max_batch: int = 1000) -> None:
        self._conn = conn
        self.max_batch = max_batch
        self._send: MemoryObjectSendStream[_Pending[Any]]
        self._recv: MemoryObjectReceiveStream[_Pending[Any]]
        self._send, self._recv = anyio.create_memory_object_stream[_Pending[Any]](max_batch)
        self._limiter = anyio.CapacityLimiter(1)
        self._listeners: list[Callable[[], None]] = []
        self.commits = 0
        self.operations = 0

    def add_commit_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` runs in the event loop after every commit (keep it tiny)."""
        self._listeners.append(listener)

    def remove_commit_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def submit(self, fn: WriteOp[T]) -> T:
        """Run ``fn(conn)`` in the next group-committed transaction and return its result.

        A caller cancelled while waiting does not take the write back: it may still commit.
        """
        pending = _Pending(fn)
        try:
            await self._send.send(pending)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as e:
            raise SiteDatabaseClosed("the site database is closed") from e
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    def close(self) -> None:
        """Stop taking writes; what is queued still runs, then :meth:`run` returns."""
        self._send.close()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self._recv:
            async for first in self._recv:
                batch: list[_Pending[Any]] = [first]
                while len(batch) < self.max_batch:
                    try:
                        batch.append(self._recv.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                # Not abandoned on cancel: a batch is never torn, its callers always hear back.
                try:
                    await anyio.to_thread.run_sync(self._run_batch, batch, limiter=self._limiter)
                finally:
                    for p in batch:
                        if not p.finished:
                            p.error = SiteDatabaseClosed("the database closed before the write ran")
                        p.done.set()
                self.commits += 1
                self.operations += len(batch)
                for listener in tuple(self._listeners):
                    listener()

    def _run_batch(self, batch: list[_Pending[Any]]) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for p in batch:
                conn.execute("SAVEPOINT op")
                try:
                    p.result = p.fn(conn)
                except Exception as e:
                    conn.execute("ROLLBACK TO op")
                    p.error = e
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except Exception as e:  # the transaction itself failed (disk full, I/O error, ...)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for p in batch:
                p.result, p.error = None, e
        for p in batch:
            p.finished = True
