"""Typed errors of the content library; each message names what was wrong."""

from __future__ import annotations


class ContentLibError(Exception):
    """Base class of every content library error."""


class UnsafePath(ContentLibError):
    """A path (source folder, manifest, tar entry, id) would escape its target or is not a file."""


class HashMismatch(ContentLibError):
    """Bytes did not match the size or SHA-256 they were announced with."""


class ContentNotFound(ContentLibError):
    """A content version or a file is not in the library."""


class CorruptPackageFile(ContentLibError):
    """A PCK or DLT file is truncated, tampered or malformed."""


class MissingBaseVersion(ContentLibError):
    """A DLT needs a base version the library does not hold."""
