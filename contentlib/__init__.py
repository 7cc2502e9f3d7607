"""The content library: single-instance storage, snapshots, signatures, deltas, package files."""

from contentlib._delta import Delta
from contentlib._errors import (
    ContentLibError,
    ContentNotFound,
    CorruptPackageFile,
    HashMismatch,
    MissingBaseVersion,
    SourceError,
    TargetNotEmpty,
    UnsafePath,
)
from contentlib._fs import atomic_write, hash_file
from contentlib._hop import ThreadHop
from contentlib._library import ContentLibrary
from contentlib._model import (
    DamagedManifest,
    FileEntry,
    FileSignature,
    FileState,
    Manifest,
    SnapshotReport,
    VerifyReport,
)
from contentlib._paths import content_id, parse_content_id
from contentlib._recovery import LibraryState, inspect_library, load_manifest

__all__ = [
    "ContentLibError",
    "ContentLibrary",
    "ContentNotFound",
    "CorruptPackageFile",
    "DamagedManifest",
    "Delta",
    "FileEntry",
    "FileSignature",
    "FileState",
    "HashMismatch",
    "LibraryState",
    "Manifest",
    "MissingBaseVersion",
    "SnapshotReport",
    "SourceError",
    "TargetNotEmpty",
    "ThreadHop",
    "UnsafePath",
    "VerifyReport",
    "atomic_write",
    "content_id",
    "hash_file",
    "inspect_library",
    "load_manifest",
    "parse_content_id",
]
