"""What a message is (a frozen msgspec.Struct), and the bus's own messages."""

from __future__ import annotations

from typing import Any

import msgspec

from bus._errors import InvalidMessage

__all__ = ["DEAD_LETTERS", "DeadLetter", "check_message", "check_message_type"]

DEAD_LETTERS = "dead_letters"
"""The topic every dead letter is published on."""


class DeadLetter(msgspec.Struct, frozen=True):
    """A message nobody handled: the address it went to, the message, and why."""

    address: str
    message: Any
    reason: str
    sender: str | None = None


# Types already checked: the send path pays one set lookup per message.
_checked: set[type] = set()


def check_message_type(tp: object) -> None:
    """Raise InvalidMessage unless ``tp`` is a frozen msgspec.Struct class."""
    if tp in _checked:
        return
    if not (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
        raise InvalidMessage(f"a message type must be a frozen msgspec.Struct, not {tp!r}")
    if not tp.__struct_config__.frozen:
        raise InvalidMessage(f"message type {tp.__name__} must be declared frozen=True")
    _checked.add(tp)


def check_message(msg: object) -> None:
    tp = type(msg)
    if tp not in _checked:
        check_message_type(tp)
