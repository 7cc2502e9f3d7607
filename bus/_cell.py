"""The running side of a spawned actor: its mailbox, workers, supervision and tasks."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from bus._actor import Actor, handler_table
from bus._counters import ActorCounters
from bus._errors import BusClosed, BusError, EscalationError, NoHandler, RemoteError
from bus._mailbox import Mailbox, MailboxClosed, Waiting, wake_next
from bus._messages import DeadLetter

if TYPE_CHECKING:
    from bus._bus import Bus

__all__ = ["Cell", "Request"]

Handler = Callable[[Any], Awaitable[Any]]

# A worker that always finds mail yields to the loop after this many messages, so a
# self-sending actor cannot starve everything else.
_BURST = 1024


class Request(Waiting):
    """A request in a mailbox: the message and the future its asker awaits."""

    __slots__ = ("msg", "reply", "sender")

    def __init__(self, msg: Any, reply: asyncio.Future[Any], sender: str | None) -> None:
        self.waiter = None
        self.msg = msg
        self.reply = reply
        self.sender = sender


class Cell:
    def __init__(
        self, bus: Bus, actor: Actor, address: str, mailbox_size: int, workers: int
    ) -> None:
        self.bus = bus
        self.actor = actor
        self.address = address
        self.log = logging.getLogger(address)
        self.mailbox = Mailbox(mailbox_size, address)
        self.workers = workers
        # Built once: message type -> bound handler (one dict lookup per message).
        self.handlers: dict[type, Handler] = {
            tp: getattr(actor, name) for tp, name in handler_table(type(actor)).items()
        }
        self.handled = 0
        self.failed = 0
        self.restarts = 0
        self.dead_letters = 0
        self.started = False
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self._failures: deque[float] = deque()
        self._restart_lock = anyio.Lock()
        self._tg: TaskGroup | None = None
        self._background: set[anyio.CancelScope] = set()
        self._pending: list[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]] = []

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self.scope:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    if await self._start():
                        self.started = True
                        pending, self._pending = self._pending, []
                        for fn, args in pending:
                            self.start_task(fn, *args)
                        for _ in range(self.workers):
                            tg.start_soon(self._work, name=f"{self.address} worker")
        finally:
            self._tg = None
            self.started = False
            self.bus._retire(self)
            self.bus._undelivered(self.address, self.mailbox.close())
            with anyio.move_on_after(self.bus.stop_timeout, shield=True):
                try:
                    await self.actor.on_stop()
                except Exception:
                    self.log.exception("%s: on_stop failed", self.address)
            self.done.set()

    def quiescent(self) -> bool:
        """Nothing to do: mailbox empty and every worker waiting for mail (or stopped)."""
        if self.done.is_set():
            return True
        mb = self.mailbox
        return self.started and not mb.items and mb.waiting == self.workers

    def counters(self) -> ActorCounters:
        return ActorCounters(
            address=self.address,
            handled=self.handled,
            failed=self.failed,
            restarts=self.restarts,
            mailbox_depth=len(self.mailbox.items),
            mailbox_high_water=self.mailbox.high_water,
            dead_letters=self.dead_letters,
            workers=self.workers,
        )

    def start_task(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        tg = self._tg
        if tg is None:
            if self.done.is_set() or self.scope.cancel_called:
                raise BusError(f"{self.address} is not running")
            self._pending.append((fn, args))  # spawned but not yet running: start it then
            return
        scope = anyio.CancelScope()
        self._background.add(scope)
        tg.start_soon(self._run_background, scope, fn, args, name=f"{self.address} task")

    async def _run_background(
        self, scope: anyio.CancelScope, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        try:
            with scope:
                await fn(*args)
        except Exception as exc:
            self._background.discard(scope)
            self._log_failure(f"background task {getattr(fn, '__qualname__', fn)!r}", exc)
            await self._restart(exc)
        finally:
            self._background.discard(scope)

    # -- the hot path ------------------------------------------------------------------

    async def _work(self) -> None:
        mb = self.mailbox
        items = mb.items
        putters = mb.putters
        handlers = self.handlers
        burst = 0
        while True:
            if items and burst < _BURST:
                item = items.popleft()
                if putters:
                    wake_next(putters)
                burst += 1
            else:
                if items:
                    await asyncio.sleep(0)
                burst = 0
                try:
                    item = await mb.get()
                except MailboxClosed:
                    return
            if type(item) is Request:
                if not await self._handle_request(item):
                    return
                continue
            h = handlers.get(type(item)) or self._resolve(type(item))
            if h is None:
                await self._dead_letter(item, None, "no handler")
                continue
            try:
                await h(item)
            except Exception as exc:
                self._log_failure(f"handler for {type(item).__name__} on {item!r}", exc)
                if not await self._restart(exc):
                    return
            else:
                self.handled += 1

    async def _handle_request(self, req: Request) -> bool:
        msg = req.msg
        reply = req.reply
        h = self.handlers.get(type(msg)) or self._resolve(type(msg))
        if h is None:
            if not reply.done():
                reply.set_exception(NoHandler(self.address, type(msg)))
            await self._dead_letter(msg, req.sender, "no handler")
            return True
        try:
            result = await h(msg)
        except Exception as exc:
            if not reply.done():
                reply.set_exception(RemoteError(self.address, type(msg), exc))
            if isinstance(exc, self.actor.reply_errors):
                self.handled += 1  # an answer, not a failure of the actor
                return True
            self._log_failure(f"handler for {type(msg).__name__} on {msg!r}", exc)
            return await self._restart(exc)
        except BaseException:
            if not reply.done():
                reply.set_exception(
                    BusClosed(f"{self.address} stopped while handling {type(msg).__name__}")
                )
            raise
        if not reply.done():
            reply.set_result(result)
        self.handled += 1
        return True

    def _resolve(self, tp: type) -> Handler | None:
        """A handler declared for a base class of ``tp``, cached for next time."""
        for base in tp.__mro__[1:]:
            h = self.handlers.get(base)
            if h is not None:
                self.handlers[tp] = h
                return h
        return None

    async def _dead_letter(self, msg: Any, sender: str | None, reason: str) -> None:
        self.dead_letters += 1
        await self.bus._dead_letter(DeadLetter(self.address, msg, reason, sender))

    # -- supervision -------------------------------------------------------------------

    def _log_failure(self, what: str, exc: BaseException) -> None:
        self.failed += 1
        self.log.error("%s: %s failed: %r", self.address, what, exc, exc_info=exc)

    async def _start(self) -> bool:
        """Run on_start; a failure there is supervised like any other."""
        while True:
            try:
                await self.actor.on_start()
                return True
            except Exception as exc:
                self._log_failure("on_start", exc)
                if not self._may_restart(exc):
                    return False
                self._begin_restart()

    async def _restart(self, exc: BaseException) -> bool:
        """Restart after a failure (on_start again, mailbox kept); False when escalated."""
        if not self._may_restart(exc):
            return False
        async with self._restart_lock:  # a pool never runs on_start twice at once
            self._begin_restart()
            return await self._start()

    def _may_restart(self, exc: BaseException) -> bool:
        bus = self.bus
        now = bus.clock.now()
        failures = self._failures
        failures.append(now)
        while failures and failures[0] < now - bus.restart_window:
            failures.popleft()
        if len(failures) > bus.max_restarts:
            bus._escalate(EscalationError(self.address, len(failures), bus.restart_window, exc))
            return False
        return True

    def _begin_restart(self) -> None:
        self.restarts += 1
        self.log.warning("%s: restarting (restart %d)", self.address, self.restarts)
        for scope in list(self._background):
            scope.cancel()
        self._background.clear()
