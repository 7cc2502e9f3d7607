"""The single writer of a site database, with group commit.

One task owns the write connection. Callers submit operations (plain functions of a
``sqlite3.Connection``) and await their results. The writer takes everything queued (up
to ``max_batch``) and runs it inside ONE transaction, committed once: 100 concurrent
callers cost one commit, not 100.

Why the batches run on the event loop's thread, and not on a thread of their own: a WAL
commit with ``synchronous=NORMAL`` does not sync, and a batch's statements take
microseconds each. On its own thread the writer released and took back the GIL around
every statement while the event loop held it, so each statement cost a pair of context
switches: the writers' threads made 330,000 switches for 300 packages, more than any
other thread, and a commit waited on the loop's turn once per statement. What can block
is the checkpoint, which syncs the WAL and the file: ``wal_autocheckpoint`` is off on the
writer's connection, and ``checkpoint`` (given by the database) runs in a worker thread,
on a connection of its own, after every ``checkpoint_every`` commits.

Failure isolation: a batch first runs optimistically, with no savepoint per operation. If
an operation raises, the transaction is rolled back and the batch runs again with each
operation in its own savepoint, so the failing one is undone alone, its caller gets the
exception, and the others commit. Hence the rule for operations: **touch only the
connection** (and read-only checks such as ``os.stat``), because one may run twice; and
keep them small, because the event loop waits for them. If the commit itself fails, every
caller in the batch gets that error, nothing of the batch is written, and the writer goes
on.

Callers wait on asyncio futures (the bus is asyncio-only too): at these rates the cost of
the waiting primitive matters.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus

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
        self.finished = False  # set once the batch is over


class Writer:
    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        max_batch: int = 1000,
        clock: Callable[[], dt.datetime] | None = None,
        checkpoint: Callable[[], object] | None = None,
        checkpoint_every: int = 64,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._conn = conn
        self._checkpoint = checkpoint
        self._checkpoint_every = checkpoint_every
        self._since_checkpoint = 0
        self._checkpointing = False
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.max_batch = max_batch
        # Unbounded, but every caller awaits its own result, so its depth is bounded by the
        # number of concurrent callers.
        self._queue: deque[_Pending[Any]] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._closed = False
        # (probe, listener): the probe reads after each commit, then the listener gets its
        # value (who needs no read learns the commit is moot to it).
        self._probes: tuple[tuple[WriteOp[Any], Callable[[Any], None]], ...] = ()
        self._probed: list[Any] = []
        self.commits = 0
        self.operations = 0

    def add_commit_probe(self, probe: WriteOp[T], listener: Callable[[T], None]) -> None:
        """After every commit, ``probe(conn)`` (a read, outside the transaction) and then
        ``listener(value)`` (keep both tiny): a listener can tell from it whether the
        commit concerns it, without a read of its own. A probe that raises is skipped for
        that commit."""
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
        async with anyio.create_task_group() as checkpoints:
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
                        self._run_batch(batch)
                    finally:
                        for p in batch:
                            self._settle(p)
                    self.commits += 1
                    self.operations += len(batch)
                    probed, self._probed = self._probed, []
                    for listener, value in probed:
                        listener(value)
                    self._count_commit(checkpoints)
                    # the rest of the event loop runs between batches (asyncio's own yield:
                    # anyio's looks up the running library first, a cost on every batch)
                    await asyncio.sleep(0)
            finally:
                self._closed = True
                while queue:  # cancelled with writes still queued: they never ran
                    self._settle(queue.popleft())

    def _count_commit(self, checkpoints: TaskGroup) -> None:
        """Start a checkpoint every ``checkpoint_every`` commits, one at a time."""
        self._since_checkpoint += 1
        checkpoint = self._checkpoint
        if checkpoint is None or self._checkpointing:
            return
        if self._since_checkpoint >= self._checkpoint_every:
            self._since_checkpoint = 0
            self._checkpointing = True
            checkpoints.start_soon(self._run_checkpoint, checkpoint)

    async def _run_checkpoint(self, checkpoint: Callable[[], object]) -> None:
        """Copy the WAL into the database file, off the event loop (it syncs both). A
        failed checkpoint loses nothing: the frames stay in the WAL for the next one."""
        try:
            await anyio.to_thread.run_sync(checkpoint)
        except sqlite3.Error:
            pass
        finally:
            self._checkpointing = False

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
