"""On-disk and reported records: frozen msgspec Structs."""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

FileState = Literal["ok", "missing", "corrupt"]
"""What a stored file is, rehashed: ``verify_file``."""


class FileEntry(msgspec.Struct, frozen=True, gc=False):
    """One file of a content version."""

    path: str  # posix, relative, validated by contentlib._paths
    size: int
    sha256: str  # uppercase hex
    mode: int = 0o644  # permission bits only
    sig_hash: str = ""  # hash of the file's chunk signature; "" until signatures are created


class Manifest(msgspec.Struct, frozen=True, gc=False):
    """A content version (DataLib): files sorted by path and a hash over them."""

    content_id: str
    package_id: str
    version: int
    files: tuple[FileEntry, ...]
    content_hash: str
    # Empty folders of the source, sorted: a release's `logs/` or `plugins/` that ships
    # empty is part of what extract must rebuild. Folders holding files are implied.
    dirs: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def hashes(self) -> set[str]:
        return {f.sha256 for f in self.files}


class PkgEntry(msgspec.Struct, frozen=True):
    """PkgLib: the content versions of one package."""

    package_id: str
    content_ids: tuple[str, ...]

    @classmethod
    def of(cls, package_id: str, versions: dict[str, int]) -> PkgEntry:
        """From content id -> version: ids oldest first."""
        return cls(package_id, tuple(sorted(versions, key=versions.__getitem__)))


class DamagedManifest(msgspec.Struct, frozen=True):
    """A DataLib manifest that failed its checks on open, moved to ``DataLib/quarantine``."""

    name: str  # its file name in DataLib: the content id it claims, plus ".json"
    path: str  # where its bytes are kept now, for a human
    reason: str

    @property
    def content_id(self) -> str:
        return self.name.removesuffix(".json")


class SnapshotReport(msgspec.Struct, frozen=True):
    manifest: Manifest
    bytes_read: int
    bytes_stored: int  # bytes newly written to FileLib
    files_shared: int  # files that were already in the library


class VerifyReport(msgspec.Struct, frozen=True):
    content_id: str
    missing: tuple[str, ...]
    corrupt: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt


class FileSignature(msgspec.Struct, frozen=True):
    """FastCDC chunks of a file: lengths in order and a 16-byte BLAKE2b hash of each."""

    sha256: str
    size: int
    avg_chunk: int
    lengths: tuple[int, ...]
    hashes: bytes  # 16 bytes per chunk, concatenated

    @property
    def sig_hash(self) -> str:
        return hashlib.sha256(msgspec.msgpack.encode(self)).hexdigest().upper()

    def chunk_hashes(self) -> list[bytes]:
        return [self.hashes[i : i + 16] for i in range(0, len(self.hashes), 16)]


def content_hash(files: tuple[FileEntry, ...], dirs: tuple[str, ...] = ()) -> str:
    """Deterministic over the content only (paths, sizes, hashes, modes, empty folders), not
    signatures or ids. Without empty folders it is what it was before they were recorded,
    so the hashes of stored versions still check."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda e: e.path):
        h.update(f"{f.path}\0{f.size}\0{f.sha256}\0{f.mode:o}\n".encode())
    for d in sorted(dirs):
        h.update(f"{d}/\0dir\n".encode())
    return h.hexdigest().upper()


def make_manifest(
    content_id: str,
    package_id: str,
    version: int,
    files: list[FileEntry],
    dirs: tuple[str, ...] | list[str] = (),
) -> Manifest:
    ordered = tuple(sorted(files, key=lambda e: e.path))
    folders = tuple(sorted(dirs))
    return Manifest(
        content_id, package_id, version, ordered, content_hash(ordered, folders), folders
    )


class DeltaPayload(msgspec.Struct, frozen=True):
    """A file a DLT carries: whole (``files/<sha>``) or as a delta against a base file
    (``deltas/<sha>``)."""

    sha256: str
    size: int
    base_sha256: str = ""


class DeltaManifest(msgspec.Struct, frozen=True):
    """The manifest a DLT carries: version N+1 as changes to version N, whose hash it names."""

    package_id: str
    base_content_id: str
    base_content_hash: str
    content_id: str
    version: int
    content_hash: str
    removed: tuple[str, ...]
    changed: tuple[FileEntry, ...]  # added or changed entries (content or mode)
    payloads: tuple[DeltaPayload, ...]
    dirs: tuple[str, ...] = ()  # the new version's empty folders, whole (a short list)

    def apply_to(self, base: Manifest) -> Manifest:
        drop = set(self.removed) | {f.path for f in self.changed}
        files = [f for f in base.files if f.path not in drop] + list(self.changed)
        return make_manifest(self.content_id, self.package_id, self.version, files, self.dirs)
