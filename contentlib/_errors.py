"""Typed errors of the content library; each message names what was wrong."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ContentLibError(Exception):
    """Base class of every content library error."""


class UnsafePath(ContentLibError):
    """A path (source folder, manifest, tar entry, id) would escape its target or is not a file."""


class SourceError(ContentLibError):
    """A source folder or file is missing, vanished while it was read, or cannot be read."""


class HashMismatch(ContentLibError):
    """Bytes did not match the size or SHA-256 they were announced with."""


class ContentNotFound(ContentLibError):
    """A content version or a file is not in the library."""


class TargetNotEmpty(ContentLibError):
    """An extract target exists and is not an empty folder."""


class CorruptPackageFile(ContentLibError):
    """A PCK or DLT file is truncated, tampered or malformed."""


class MissingBaseVersion(ContentLibError):
    """A DLT needs a base version the library does not hold."""


@contextmanager
def single_error() -> Iterator[None]:
    """Raise a worker's error as it was raised, not inside the ExceptionGroup a task group
    wraps it in: a ContentLibError first, else an OSError (ENOSPC), else the first one.
    A group holding a cancellation or an interrupt is left as it is."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        errors = [e for e in leaves if isinstance(e, Exception)]
        if len(errors) < len(leaves):
            raise
        kinds = (ContentLibError, OSError, Exception)
        first = next(e for kind in kinds for e in errors if isinstance(e, kind))
        # Several failures: the group stays reachable as the cause, for the others.
        raise first from (group if len(errors) > 1 else None)


def _leaves(e: BaseException) -> Iterator[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        for sub in e.exceptions:
            yield from _leaves(sub)
    else:
        yield e
