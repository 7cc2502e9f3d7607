"""The Bus: addresses, send/request/publish, supervision's last resort, and shutdown."""

from __future__ import annotations

import asyncio
import enum
import logging
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup

from bus._actor import Actor
from bus._cell import Cell, Request
from bus._clock import Clock, RealClock, TimerHandle
from bus._counters import ActorCounters
from bus._errors import (
    AddressInUse,
    BusClosed,
    BusError,
    ConfigError,
    EscalationError,
    RequestTimeout,
    UnknownAddress,
)
from bus._messages import DEAD_LETTERS, DeadLetter, check_message
from bus._topics import Policy, Subscription, Topics

__all__ = ["Bus", "ScheduledSend"]

A = TypeVar("A", bound=Actor)
log = logging.getLogger("bus")


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"  # leaving `async with`: the outside may not send, actors still may
    STOPPED = "stopped"


class ScheduledSend:
    """A ``send_later`` not yet delivered; ``cancel()`` withdraws it."""

    __slots__ = ("_timer", "address", "message", "sender")

    def __init__(self, address: str, message: Any, sender: str | None) -> None:
        self.address = address
        self.message = message
        self.sender = sender
        self._timer: TimerHandle | None = None

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _expire(req: Request, address: str, timeout: float) -> None:
    exc = RequestTimeout(address, type(req.msg), timeout)
    waiter = req.waiter
    if waiter is not None and not waiter.done():  # still waiting for mailbox room
        waiter.set_exception(exc)
    elif not req.reply.done():
        req.reply.set_exception(exc)


def _check_count(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
    return value


class Bus:
    """An in-process message bus; ``async with`` runs it in an anyio task group.

    Shutdown policy (leaving ``async with`` normally): ``send``/``request``/``publish`` from
    outside raise BusClosed; actors keep exchanging messages until every mailbox is empty
    and every worker idle, or ``drain_timeout`` real seconds pass (0: no drain); then
    pending ``send_later`` timers are dropped, what is left in mailboxes is counted in
    ``undelivered_count`` (waiting requests get BusClosed), each actor is cancelled and its
    ``on_stop`` runs (bounded by ``stop_timeout``), and every task is joined.
    If the body raises, or an actor escalates, there is no drain.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        drain_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        if not isinstance(max_restarts, int) or max_restarts < 0:
            raise ConfigError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
        for name, value in (
            ("restart_window", restart_window),
            ("drain_timeout", drain_timeout),
            ("stop_timeout", stop_timeout),
        ):
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        self.clock: Clock = clock if clock is not None else RealClock()
        self.max_restarts = max_restarts
        self.restart_window = float(restart_window)
        self.drain_timeout = float(drain_timeout)
        self.stop_timeout = float(stop_timeout)
        self.dead_letter_count = 0
        self.undelivered_count = 0
        self._registry: dict[str, Cell] = {}  # addresses that accept messages
        self._cells: dict[str, Cell] = {}  # every actor spawned, for counters
        self._topics = Topics()
        self._timers: set[ScheduledSend] = set()
        self._tg: TaskGroup | None = None
        self._state = _State.NEW
        self._error: EscalationError | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Bus:
        if self._state is not _State.NEW:
            raise BusError("a Bus runs once; create a new one")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._state = _State.RUNNING
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tg is not None
        from_drain = False
        if e is None and self._error is None:
            self._state = _State.DRAINING
            try:
                await self._drain(list(self._registry.values()))
            except BaseException as exc:  # cancelled while draining (escalation or outside)
                et, e, tb, from_drain = type(exc), exc, exc.__traceback__, True
        self._shutdown()
        if e is not None and not from_drain and not isinstance(e, asyncio.CancelledError):
            # The body's own error propagates as itself, not wrapped in an ExceptionGroup.
            await self._tg.__aexit__(None, None, None)
            if self._error is not None:
                raise self._error
            return False
        suppressed = await self._tg.__aexit__(et, e, tb)
        if self._error is not None:
            raise self._error
        if from_drain and not suppressed and e is not None:
            raise e
        return suppressed

    @property
    def running(self) -> bool:
        return self._state in (_State.RUNNING, _State.DRAINING)

    async def _drain(self, cells: list[Cell]) -> None:
        if not cells or self.drain_timeout <= 0:
            return
        with anyio.move_on_after(self.drain_timeout):
            while True:
                idle = asyncio.Event()
                for cell in cells:
                    cell.mailbox.on_idle = idle.set
                try:
                    if all(cell.quiescent() for cell in cells):
                        return
                    await idle.wait()
                finally:
                    for cell in cells:
                        cell.mailbox.on_idle = None

    def _shutdown(self) -> None:
        self._state = _State.STOPPED
        for scheduled in self._timers:
            scheduled.cancel()
        self._timers.clear()
        self._topics.close_all()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _escalate(self, error: EscalationError) -> None:
        if self._error is None:
            self._error = error
            log.error("bus stopping: %s", error)
        self._shutdown()

    def _retire(self, cell: Cell) -> None:
        if self._registry.get(cell.address) is cell:
            del self._registry[cell.address]

    def _undelivered(self, address: str, items: list[Any]) -> None:
        """Count what a stopped actor never took; its waiting askers get BusClosed."""
        if not items:
            return
        self.undelivered_count += len(items)
        told = 0
        for item in items:
            if type(item) is Request:
                if not item.reply.done():
                    item.reply.set_exception(BusClosed(f"{address} stopped before handling it"))
                told += 1  # told now, or its asker stopped waiting (cancelled) already
        # A request's asker hears BusClosed and decides (DRS retries its batch at the next
        # start), or has gone; a plain message is lost without anyone knowing: only that
        # warns.
        lost = len(items) - told
        if lost:
            log.warning("%s stopped with %d messages not handled", address, lost)
        else:
            log.info("%s stopped with %d requests not handled (askers told)", address, told)

    # -- actors ------------------------------------------------------------------------

    def spawn(
        self,
        actor: A,
        address: str,
        *,
        mailbox_size: int | None = None,
        workers: int | None = None,
    ) -> A:
        """Register ``actor`` at ``address`` and start it (on_start, then its workers)."""
        if self._state is _State.NEW:
            raise BusError(f"cannot spawn {address!r}: the bus is not started (use async with)")
        if self._state is _State.STOPPED:
            raise BusClosed(f"cannot spawn {address!r}: the bus is stopped")
        if not isinstance(address, str) or not address or address != address.strip():
            raise ConfigError(
                f"an address must be a non-empty str without edge spaces: {address!r}"
            )
        if not isinstance(actor, Actor):
            raise ConfigError(f"cannot spawn {actor!r} at {address!r}: not an Actor")
        if address in self._registry:
            raise AddressInUse(f"an actor is already registered at {address!r}")
        if actor._cell is not None:
            raise BusError(f"{type(actor).__name__} is already spawned at {actor._cell.address!r}")
        size = _check_count(f"mailbox_size of {address}", mailbox_size or actor.mailbox_size)
        count = _check_count(f"workers of {address}", workers or actor.workers)
        cell = Cell(self, actor, address, size, count)
        actor._cell = cell
        self._registry[address] = cell
        self._cells[address] = cell
        assert self._tg is not None
        self._tg.start_soon(cell.run, name=f"actor {address}")
        return actor

    async def stop_actor(self, address: str) -> None:
        """Unregister, drain its mailbox (up to ``drain_timeout``), cancel it, run on_stop."""
        cell = self._registry.pop(address, None)
        if cell is None:
            raise UnknownAddress(address)
        await self._drain([cell])
        cell.scope.cancel()
        await cell.done.wait()

    def inject_failure(self, address: str, error: Exception) -> None:
        """Fail the actor at ``address`` as if one of its background tasks had raised
        ``error``: supervised like any failure (logged, restarted with its mailbox kept,
        escalated past ``max_restarts``). Fault injection for tests and stress runs."""
        cell = self._registry.get(address)
        if cell is None:
            raise UnknownAddress(address)

        async def fail() -> None:
            raise error

        cell.start_task(fail)

    def counters(self, address: str) -> ActorCounters:
        """The actor's counters now (also after it stopped, until another takes its address)."""
        cell = self._cells.get(address)
        if cell is None:
            raise UnknownAddress(address)
        return cell.counters()

    def addresses(self) -> list[str]:
        """Addresses that accept messages now."""
        return list(self._registry)

    # -- messages ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state is not _State.RUNNING:
            raise BusClosed(f"the bus is {self._state.value}")

    async def send(self, address: str, msg: Any) -> None:
        """Tell: waits only while the mailbox is full (backpressure)."""
        if self._state is not _State.RUNNING:
            self._check_open()
        await self._send(address, msg, None)

    async def request(self, address: str, msg: Any, timeout: float | None = 60.0) -> Any:
        """Ask: the handler's return value, RemoteError if it raised, RequestTimeout."""
        if self._state is not _State.RUNNING:
            self._check_open()
        return await self._request(address, msg, timeout, None)

    async def publish(self, topic: str, msg: Any) -> int:
        """Publish to every subscriber of ``topic``; returns how many it reached."""
        self._check_open()
        return await self._publish(topic, msg)

    def subscribe(
        self, topic: str | tuple[str, ...], buffer: int = 1000, policy: Policy = "block"
    ) -> Subscription:
        """A subscription (``async with`` it) to one topic, or to several through one buffer;
        see Subscription for the policies."""
        return Subscription(self._topics, topic, buffer, policy)

    def send_later(self, delay: float, address: str, msg: Any) -> ScheduledSend:
        """Send after ``delay`` clock seconds, unless the bus stops first."""
        self._check_open()
        return self._send_later(delay, address, msg, None)

    @property
    def dead_letters_topic(self) -> str:
        return DEAD_LETTERS

    async def _send(self, address: str, msg: Any, sender: str | None) -> None:
        check_message(msg)
        cell = self._registry.get(address)
        if cell is None:
            await self._unknown(address, msg, sender)
            return
        mb = cell.mailbox
        if not mb.try_put(msg):
            await mb.put(msg)

    async def _request(
        self, address: str, msg: Any, timeout: float | None, sender: str | None
    ) -> Any:
        check_message(msg)
        cell = self._registry.get(address)
        if cell is None:
            await self._unknown(address, msg, sender)
        assert cell is not None
        req = Request(msg, asyncio.get_running_loop().create_future(), sender)
        if timeout is None:
            if not cell.mailbox.try_put(req):
                await cell.mailbox.put(req)
            return await req.reply
        timer = self.clock.call_later(timeout, _expire, req, address, timeout)
        try:
            if not cell.mailbox.try_put(req):
                await cell.mailbox.put(req)
            return await req.reply
        finally:
            timer.cancel()

    async def _publish(self, topic: str, msg: Any) -> int:
        check_message(msg)
        if self._state is _State.STOPPED:
            raise BusClosed(f"cannot publish on {topic!r}: the bus is stopped")
        return await self._topics.publish(topic, msg)

    def _send_later(
        self, delay: float, address: str, msg: Any, sender: str | None
    ) -> ScheduledSend:
        check_message(msg)
        if self._state is _State.STOPPED:
            raise BusClosed(f"cannot schedule {type(msg).__name__} to {address!r}: bus stopped")
        scheduled = ScheduledSend(address, msg, sender)
        # The timer is registered now, so a ManualClock advanced right after fires it.
        scheduled._timer = self.clock.call_later(delay, self._fire, scheduled)
        self._timers.add(scheduled)
        return scheduled

    def _fire(self, scheduled: ScheduledSend) -> None:
        self._timers.discard(scheduled)
        if self._state is _State.STOPPED or self._tg is None:
            return
        cell = self._registry.get(scheduled.address)
        if cell is not None and cell.mailbox.try_put(scheduled.message):
            return
        self._tg.start_soon(self._deliver_later, scheduled)  # backpressure or dead letter

    async def _deliver_later(self, scheduled: ScheduledSend) -> None:
        try:
            await self._send(scheduled.address, scheduled.message, scheduled.sender)
        except BusError as exc:
            log.warning("scheduled %s not delivered: %s", type(scheduled.message).__name__, exc)

    async def _unknown(self, address: str, msg: Any, sender: str | None) -> None:
        if self._state is _State.STOPPED:
            raise BusClosed(f"cannot send {type(msg).__name__} to {address!r}: bus stopped")
        await self._dead_letter(DeadLetter(address, msg, "unknown address", sender))
        raise UnknownAddress(address, type(msg))

    async def _dead_letter(self, letter: DeadLetter) -> None:
        self.dead_letter_count += 1
        log.warning(
            "dead letter to %s (%s): %s",
            letter.address,
            letter.reason,
            type(letter.message).__name__,
        )
        if self._state is not _State.STOPPED:
            await self._topics.publish(DEAD_LETTERS, letter)
