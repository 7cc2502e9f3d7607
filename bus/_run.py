"""Run an async main on uvloop where it is installed, plain asyncio otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from bus._errors import ConfigError

__all__ = ["loop_name", "run", "uvloop_available"]

T = TypeVar("T")


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: the loop running now."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(
    main: Callable[..., Coroutine[Any, Any, T]], *args: Any, use_uvloop: bool | None = None
) -> T:
    """``main(*args)`` on a new loop: uvloop if installed (or ``use_uvloop``), else asyncio."""
    want = uvloop_available() if use_uvloop is None else use_uvloop
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if want:
        try:
            import uvloop
        except ImportError as exc:
            raise ConfigError("use_uvloop=True but uvloop is not installed") from exc
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main(*args))
