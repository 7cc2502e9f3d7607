"""The Actor base class and the ``@handler`` decorator."""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Awaitable, Callable
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar

from bus._errors import BusError, ConfigError, InvalidMessage
from bus._messages import check_message_type

if TYPE_CHECKING:
    from bus._bus import Bus, ScheduledSend
    from bus._cell import Cell
    from bus._clock import Clock

__all__ = ["Actor", "handler", "handler_table"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_MARK = "__bus_handler__"


def handler(fn: F) -> F:
    """Declare an ``async def name(self, msg: SomeStruct)`` method as the handler of SomeStruct.

    The message type is read from the annotation; the return value is the reply to a request.
    """
    is_async = inspect.iscoroutinefunction(fn)  # (a variable: no TypeGuard narrowing of fn)
    if not is_async:
        raise ConfigError(f"handler {fn.__qualname__} must be an async def")
    setattr(fn, _MARK, True)
    return fn


_tables: dict[type[Actor], dict[type, str]] = {}


def handler_table(cls: type[Actor]) -> dict[type, str]:
    """Message type -> handler method name for an actor class (built once per class)."""
    table = _tables.get(cls)
    if table is not None:
        return table
    table = {}
    seen: set[str] = set()
    for klass in cls.__mro__:  # most derived first: an override wins
        for name, fn in vars(klass).items():
            if name in seen or not getattr(fn, _MARK, False):
                continue
            seen.add(name)
            tp = _message_type(cls, name, fn)
            if tp in table:
                raise ConfigError(
                    f"{cls.__name__} has two handlers for {tp.__name__}: {table[tp]} and {name}"
                )
            table[tp] = name
    _tables[cls] = table
    return table


def _message_type(cls: type, name: str, fn: Callable[..., Any]) -> type:
    params = list(inspect.signature(fn).parameters.values())[1:]
    if len(params) != 1:
        raise ConfigError(f"handler {cls.__name__}.{name} must take exactly one message argument")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise ConfigError(
            f"handler {cls.__name__}.{name}: cannot resolve annotations: {exc}"
        ) from exc
    tp = hints.get(params[0].name)
    if tp is None:
        raise ConfigError(f"handler {cls.__name__}.{name} must annotate its message argument")
    try:
        check_message_type(tp)
    except InvalidMessage as exc:
        raise ConfigError(f"handler {cls.__name__}.{name}: {exc}") from exc
    return typing.cast(type, tp)


class Actor:
    """A component on the bus. Subclass, declare ``@handler`` methods, and ``bus.spawn`` it.

    ``mailbox_size`` bounds the mailbox (a full mailbox is backpressure to senders);
    ``workers`` > 1 serves one mailbox with that many concurrent workers (a worker pool).
    Both may be overridden per instance before spawning.
    """

    mailbox_size: int = 1000
    workers: int = 1
    request_timeout: float | None = 60.0
    """How long :meth:`request` waits for a reply by default, in clock seconds (None: no
    limit). A component whose asks are real work (hashing, database writes), not simulated
    network time, sets None: a clock timeout at a small time_scale would fail good work."""
    reply_errors: tuple[type[Exception], ...] = ()
    """Errors a handler raises as its *answer* to a request (a bad argument, a damaged
    file): the asker gets them as RemoteError, and they count as neither a failure nor a
    reason to restart — so one bad request cannot make the supervisor stop the actor."""
    _cell: Cell | None = None

    async def on_start(self) -> None:
        """Runs before the first message, and again after every restart."""

    async def on_stop(self) -> None:
        """Runs once when the actor stops (after its mailbox is drained, or on cancel)."""

    @property
    def cell(self) -> Cell:
        if self._cell is None:
            raise BusError(f"{type(self).__name__} is not spawned on a bus")
        return self._cell

    @property
    def bus(self) -> Bus:
        return self.cell.bus

    @property
    def address(self) -> str:
        return self.cell.address

    @property
    def clock(self) -> Clock:
        return self.cell.bus.clock

    @property
    def log(self) -> logging.Logger:
        return self.cell.log

    async def send(self, address: str, msg: Any) -> None:
        """Tell: waits only while the target's mailbox is full."""
        await self.cell.bus._send(address, msg, self.cell.address)

    async def request(
        self, address: str, msg: Any, timeout: float | EllipsisType | None = ...
    ) -> Any:
        """Ask and wait for the reply (RequestTimeout after ``timeout`` clock seconds;
        :attr:`request_timeout` by default)."""
        limit = self.request_timeout if timeout is ... else timeout
        return await self.cell.bus._request(address, msg, limit, self.cell.address)

    async def publish(self, topic: str, msg: Any) -> int:
        """Publish on a topic; returns the number of subscribers it reached."""
        return await self.cell.bus._publish(topic, msg)

    def send_later(self, delay: float, address: str, msg: Any) -> ScheduledSend:
        """Send after ``delay`` clock seconds (owned by the bus: survives restarts)."""
        return self.cell.bus._send_later(delay, address, msg, self.cell.address)

    def start_task(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run a background task owned by this actor; cancelled when it stops or restarts.

        If it raises, that counts as a failure of the actor (logged, restart, escalation).
        """
        self.cell.start_task(fn, *args)
