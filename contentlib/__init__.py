"""The content library: single-instance storage, snapshots, signatures, deltas, package files."""

from contentlib._delta import Delta
from contentlib._errors import (
    ContentLibError,
    ContentNotFound,
    CorruptPackageFile,
    HashMismatch,
    MissingBaseVersion,
    UnsafePath,
)
from contentlib._library import ContentLibrary
from contentlib._model import (
    FileEntry,
    FileSignature,
    Manifest,
    SnapshotReport,
    VerifyReport,
)

__all__ = [
    "ContentLibError",
    "ContentLibrary",
    "ContentNotFound",
    "CorruptPackageFile",
    "Delta",
    "FileEntry",
    "FileSignature",
    "HashMismatch",
    "Manifest",
    "MissingBaseVersion",
    "SnapshotReport",
    "UnsafePath",
    "VerifyReport",
]
