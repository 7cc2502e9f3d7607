"""Thread and process IDs as the product's logs print them.

The product runs each component in threads of its own: DistMgr's main thread, its package
processing threads, one DP thread per DP, the replication processing thread; PkgXferMgr's
main thread and one sending thread per job. cmdist runs them as tasks on one event loop,
so a task stands for a thread: a context variable holds the ID the task logs under, and
every line and STATMSG ``TID=`` written from that task carries it. Each site server has its
own process ID for STATMSG ``PID=``, as separate machines would.
"""

from __future__ import annotations

import itertools
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = [
    "adopt_thread_id",
    "as_thread",
    "current_thread_id",
    "format_thread_id",
    "new_thread_id",
    "site_pid",
]

_current: ContextVar[int | None] = ContextVar("cmdist_thread_id", default=None)
# Windows thread and process IDs are multiples of 4; these start where the reference's do.
_ids = itertools.count(0x400, 4)
_ids_lock = threading.Lock()


def new_thread_id() -> int:
    """A thread ID no other thread of this process has."""
    with _ids_lock:
        return next(_ids)


def current_thread_id() -> int:
    """The ID the calling task logs under (the OS thread's, outside any component)."""
    tid = _current.get()
    return tid if tid is not None else threading.get_native_id()


def adopt_thread_id(tid: int) -> None:
    """Make ``tid`` the calling task's ID if it has none yet (a component's main thread:
    its handlers and background tasks run in tasks that belong to it alone)."""
    if _current.get() is None:
        _current.set(tid)


@contextmanager
def as_thread(tid: int) -> Iterator[None]:
    """Log as thread ``tid`` inside the block (a processing, DP or sending thread)."""
    token = _current.set(tid)
    try:
        yield
    finally:
        _current.reset(token)


def format_thread_id(tid: int) -> str:
    """``0x16A8 (5800)``, as "thread ID = ..." lines print a thread that starts."""
    return f"0x{tid:X} ({tid})"


def site_pid(site_code: str) -> int:
    """A site server's process ID: stable for the site, different between sites."""
    return 1000 + (zlib.crc32(site_code.encode()) % 2000) * 4
