"""One owner per data root: an OS file lock, so a killed process never leaves a stale one."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from actors.errors import DataRootLocked

__all__ = ["RootLock"]

LOCK_FILE = ".cmdist.lock"


class RootLock:
    """``flock`` on ``<root>/.cmdist.lock``, holding the owner's PID for the error message.

    flock locks belong to an open file description: a second open of the same root in the
    same process is refused as well as one in another process.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataRootLocked(str(self.path.parent), holder) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            os.close(fd)  # closing the description releases the lock


def _holder(fd: int) -> str:
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    return f"process {text}" if text.isdigit() else "another process"
