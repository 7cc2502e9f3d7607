"""The running side of a Hierarchy: its sites and bus in a task of their own.

``Hierarchy.start`` runs everything the hierarchy owns (site databases, actors, the bus)
inside one asyncio task, so start and close may happen in different tasks of the caller
(a service's startup and shutdown hooks), and the caller's own code never runs inside the
hierarchy's task groups: its exceptions come out as raised, never wrapped in groups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

import anyio

from actors._runtime._site import SiteServer
from actors.config import HierarchyConfig
from actors.dp import ContentServer
from actors.errors import HierarchyFailed
from actors.site import ShareWatch
from bus import Bus

__all__ = ["Runner"]


class _Abort(Exception):
    """Leave the bus without its drain: closing after an error, or a cancelled caller."""


class Runner:
    """Opens the sites, runs the bus until asked to stop, then shuts down.

    ``stop(drain=True)``: the bus drains (transfers in flight get ``shutdown_timeout``
    seconds, then are cancelled; their jobs stay in the database and resume at the next
    open). ``stop(drain=False)``: actors are cancelled at once, as a kill would.
    """

    def __init__(
        self,
        config: HierarchyConfig,
        bus: Bus,
        attach: Callable[[list[SiteServer]], None],
        watch: Callable[..., Coroutine[Any, Any, None]],
    ) -> None:
        self.config = config
        self.bus = bus
        self._attach = attach
        self._watch = watch
        self._stop = asyncio.Event()
        self._drain = True
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failure: BaseException | None = None
        self.task = asyncio.create_task(self._run(), name="cmdist hierarchy")

    async def ready(self) -> None:
        """Wait until every site runs; raise what stopped the start (unwrapped)."""
        await asyncio.shield(self._ready)

    def stop(self, *, drain: bool) -> None:
        self._drain = self._drain and drain
        self._stop.set()

    async def _run(self) -> None:
        try:
            async with AsyncExitStack() as stack:
                # The web server of every DP and MP: up before the sites, down after them.
                content = await stack.enter_async_context(ContentServer.open())
                shares = ShareWatch()  # the receive shares' change notifications
                sites = [
                    await SiteServer.open(stack, self.config, site, self.bus, content, shares)
                    for site in self.config.sites
                ]
                async with self.bus:
                    self._attach(sites)
                    for site in sites:
                        await site.start()
                    async with anyio.create_task_group() as tg:
                        await tg.start(self._watch)
                        self._ready.set_result(None)
                        await self._stop.wait()
                        tg.cancel_scope.cancel()
                    if not self._drain:
                        raise _Abort
        except _Abort:
            pass
        except BaseException as exc:
            error = unwrap(exc)
            if not self._ready.done():
                self._ready.set_exception(error)
            else:
                self.failure = HierarchyFailed(f"the hierarchy stopped: {error}")
                self.failure.__cause__ = error
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if not self._ready.done():
                self._ready.set_exception(HierarchyFailed("the hierarchy stopped while starting"))


def unwrap(exc: BaseException) -> BaseException:
    """The one error inside nested single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
