"""A light thread hop for small file operations: one long-lived worker thread fed by a queue.

``anyio.to_thread.run_sync`` costs the event loop two checkpoints, a capacity limiter, a
cancel scope and a copied context per call: for an operation of a few tens of
microseconds (write a 100-byte file, rename, unlink, hash 64 KiB) the hop costs more loop
time than the work. Here a call is one queue put; the worker thread runs it and wakes the
caller with ``call_soon_threadsafe``. Calls run one at a time, in submission order, so
only small operations belong here (a large copy or a sync would hold up every call behind
it: those keep ``anyio.to_thread``).

Cancellation is as ``anyio.to_thread.run_sync``'s (not abandoned): a caller cancelled while
its call runs waits, shielded, for the call to end, then the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Generic, TypeVar

import anyio

__all__ = ["ThreadHop"]

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("args", "done", "error", "fn", "loop", "result", "waiter")

    def __init__(
        self, fn: Callable[..., T], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.fn = fn
        self.args = args
        self.loop = loop
        self.waiter: asyncio.Future[None] = loop.create_future()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False


def _finished(call: _Call[Any]) -> None:
    """In the event loop: the call has ended (its outcome is on it)."""
    call.done = True
    if not call.waiter.done():
        call.waiter.set_result(None)


class ThreadHop:
    """One worker thread running small blocking calls for async callers, in order.

    The thread starts with the first call and ends after ``idle`` seconds without one
    (a library nobody uses holds no thread); the next call starts it again."""

    def __init__(self, name: str = "cmdist-hop", *, idle: float = 5.0) -> None:
        self.name = name
        self.idle = idle
        self._queue: queue.SimpleQueue[_Call[Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False
        self.calls = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the worker thread; its result, or its exception raised here."""
        call: _Call[T] = _Call(fn, args, asyncio.get_running_loop())
        self._queue.put(call)
        with self._lock:  # after the put: a thread that ends from now on has seen the call
            if not self._running:
                self._running = True
                threading.Thread(target=self._serve, name=self.name, daemon=True).start()
        self.calls += 1
        try:
            await call.waiter
        except asyncio.CancelledError:
            if not call.done:  # the call runs on: wait for its end before the cancel goes on
                with anyio.CancelScope(shield=True):
                    while not call.done:
                        call.waiter = call.loop.create_future()
                        await call.waiter
            raise
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    def _serve(self) -> None:
        calls = self._queue
        while True:
            try:
                call = calls.get(timeout=self.idle)
            except queue.Empty:
                with self._lock:
                    if calls.empty():
                        self._running = False
                        return
                continue
            try:
                call.result = call.fn(*call.args)
            except BaseException as e:  # handed to the caller, whatever it is
                call.error = e
            with suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                call.loop.call_soon_threadsafe(_finished, call)
