"""Typed errors of the bus: every one names what was wrong."""

from __future__ import annotations

__all__ = [
    "AddressInUse",
    "BusClosed",
    "BusError",
    "ConfigError",
    "EscalationError",
    "InvalidMessage",
    "NoHandler",
    "RemoteError",
    "RequestTimeout",
    "UnknownAddress",
]


class BusError(Exception):
    """Base class of every error the bus raises."""


class ConfigError(BusError, ValueError):
    """A bad argument to the bus (a size, a policy, a time scale, a handler signature)."""


class InvalidMessage(BusError, TypeError):
    """A message that is not a frozen ``msgspec.Struct``."""


class BusClosed(BusError):
    """The bus (or the actor, or the subscription) no longer accepts messages."""


class UnknownAddress(BusError, LookupError):
    """No actor is registered at the address (the message was recorded as a dead letter)."""

    def __init__(self, address: str, message_type: type | None = None) -> None:
        what = f" for {message_type.__name__}" if message_type is not None else ""
        super().__init__(f"no actor at {address!r}{what}")
        self.address = address
        self.message_type = message_type


class AddressInUse(BusError):
    """An actor is already registered at the address."""


class NoHandler(BusError):
    """A request reached an actor that has no handler for its message type (a dead letter)."""

    def __init__(self, address: str, message_type: type) -> None:
        super().__init__(f"{address} has no handler for {message_type.__name__}")
        self.address = address
        self.message_type = message_type


class RemoteError(BusError):
    """The handler of a request raised; ``original`` (also ``__cause__``) is what it raised."""

    def __init__(self, address: str, message_type: type, original: BaseException) -> None:
        super().__init__(
            f"{address} failed handling {message_type.__name__}: "
            f"{type(original).__name__}: {original}"
        )
        self.address = address
        self.message_type = message_type
        self.original = original
        self.__cause__ = original


class RequestTimeout(BusError, TimeoutError):
    """No reply within the request's timeout (in clock seconds)."""

    def __init__(self, address: str, message_type: type, timeout: float) -> None:
        super().__init__(f"{address} did not reply to {message_type.__name__} within {timeout:g} s")
        self.address = address
        self.message_type = message_type
        self.timeout = timeout


class EscalationError(BusError):
    """An actor failed more than ``max_restarts`` times within ``restart_window``; bus stopped."""

    def __init__(self, address: str, restarts: int, window: float, last: BaseException) -> None:
        super().__init__(
            f"{address} failed {restarts} times within {window:g} s; last: "
            f"{type(last).__name__}: {last}"
        )
        self.address = address
        self.restarts = restarts
        self.window = window
        self.__cause__ = last
