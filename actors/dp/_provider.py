"""The SMS DP Provider of one distribution point: its content library and its staging share.

PkgXferMgr copies files into the DP's ``SMS_DP$`` staging folder and then asks the DP,
through these messages, to verify them and add them to its content library; last it adds
the content version itself. Nothing staged becomes visible before its size and SHA-256
match, and a version becomes visible only when every file it names is present.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import msgspec

from actors.dp._layout import staging_folder
from actors.status import CMTraceLog, Component
from bus import handler
from contentlib import (
    ContentLibError,
    ContentLibrary,
    ContentNotFound,
    FileSignature,
    Manifest,
    parse_content_id,
)

__all__ = [
    "DPAbandon",
    "DPAddContent",
    "DPAddFile",
    "DPApplyDelta",
    "DPDamageReport",
    "DPDamaged",
    "DPInventory",
    "DPProvider",
    "DPQuery",
    "DPRemovePackage",
    "DPSignature",
    "DPValidate",
    "DPValidation",
]


class DPQuery(msgspec.Struct, frozen=True):
    """What the DP holds of a package: which of ``hashes`` it has, and its latest version.

    With ``content_id`` (the version a job is about to send) the files it has are held for
    that version until it is added or abandoned: a removal meanwhile cannot delete a file
    the job was told is there. An older version of the package still held is abandoned."""

    pkg_id: str
    hashes: tuple[str, ...]
    content_id: str = ""


class DPInventory(msgspec.Struct, frozen=True):
    present: tuple[bool, ...]
    previous: Manifest | None  # the package's latest content version on this DP


class DPAddFile(msgspec.Struct, frozen=True):
    """Verify a staged file and move it into the library (``replace``: overwrite a stored
    copy, as Redistribute does, so a damaged file on the DP is mended)."""

    sha256: str
    size: int
    staged: str  # a file name in SMS_DP$
    replace: bool = False
    content_id: str = ""  # the version it is for: held until that version is added


class DPApplyDelta(msgspec.Struct, frozen=True):
    """Rebuild a file from a stored older file and a staged delta."""

    old_sha256: str
    staged: str
    sha256: str
    size: int
    content_id: str = ""  # the version it is for: held until that version is added


class DPSignature(msgspec.Struct, frozen=True):
    """The chunk signature of a stored file (the RDC signature a delta is computed from)."""

    sha256: str


class DPAddContent(msgspec.Struct, frozen=True):
    """Add a content version whose files are all in the library; older versions of the
    package go (their files stay while another version or package still uses them).
    Answers False, changing nothing, when the DP holds a newer version: a late job for an
    older version never rolls a DP back."""

    manifest: Manifest


class DPValidate(msgspec.Struct, frozen=True):
    """Content validation: rehash every file of the package's latest version on the DP."""

    pkg_id: str


class DPValidation(msgspec.Struct, frozen=True):
    """What validation found: the version checked (0: the DP holds none) and the package
    paths whose stored file is missing or does not hash to its name."""

    pkg_id: str
    version: int
    missing: tuple[str, ...] = ()
    corrupt: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.version > 0 and not self.missing and not self.corrupt


class DPDamaged(msgspec.Struct, frozen=True):
    """Which packages' content the DP's library quarantined when it opened (a manifest that
    did not decode or did not match its files)."""


class DPDamageReport(msgspec.Struct, frozen=True):
    damaged: dict[str, str]  # package ID -> what was wrong, naming the file


class DPRemovePackage(msgspec.Struct, frozen=True):
    pkg_id: str


class DPAbandon(msgspec.Struct, frozen=True):
    """A job will not add this version (cancelled, failed for good, superseded): the files
    received for it that no version uses go now, not at the next start."""

    content_id: str


def staging_name(sha256: str, content_id: str, suffix: str = "temp") -> str:
    """``<SHA256>-<ContentID>.temp``, as the reference's "Sending file" line shows."""
    return f"{sha256}-{content_id}.{suffix}"


class DPProvider(Component):
    """``<DP>/DPProvider``: the DP's SCCMContentLib and SMS_DP$ under its own folder."""

    workers = 4  # files of several jobs are verified at once; contentlib is safe for that
    # A damaged or refused file is the job's failure, answered to PkgXferMgr: never a
    # reason to restart (or, repeated, to stop) the DP.
    reply_errors = (ContentLibError, OSError, ValueError)

    def __init__(
        self, name: str, root: Path, library: ContentLibrary, *, log: CMTraceLog | None = None
    ) -> None:
        self.name = name
        self.root = root
        self.staging = staging_folder(root)
        self.library = library  # root / "SCCMContentLib", opened by the site
        self.trace_log = log
        # Files held for versions being received: content id -> hashes (pins in the library).
        self._receiving: dict[str, list[str]] = {}

    async def on_start(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)

    def staged_path(self, name: str) -> Path:
        path = self.staging / name
        if path.parent != self.staging or name.startswith("."):
            raise ValueError(f"DP {self.name}: staged name {name!r} is not a plain file name")
        return path

    @handler
    async def query(self, msg: DPQuery) -> DPInventory:
        versions = self.library.content_ids(msg.pkg_id)
        previous = self.library.manifest(versions[-1]) if versions else None
        package = f"{msg.pkg_id}."
        for older in [c for c in self._receiving if c.startswith(package)]:
            if msg.content_id and older != msg.content_id:
                self._abandon(older)  # (jobs of one package and DP run one at a time)
        present = self._hold(msg.content_id, msg.hashes)
        return DPInventory(tuple(present), previous)

    @handler
    async def signature(self, msg: DPSignature) -> FileSignature:
        return await self.library.signature(msg.sha256)

    @handler
    async def add_file(self, msg: DPAddFile) -> None:
        staged = self.staged_path(msg.staged)
        try:
            await self.library.add_file_from_path(
                msg.sha256, msg.size, staged, move=True, replace=msg.replace
            )
        finally:
            staged.unlink(missing_ok=True)
        self._hold(msg.content_id, [msg.sha256])

    @handler
    async def apply_delta(self, msg: DPApplyDelta) -> None:
        staged = self.staged_path(msg.staged)
        try:
            delta = await anyio.to_thread.run_sync(staged.read_bytes)
            await self.library.apply_file_delta(msg.old_sha256, delta, msg.sha256, msg.size)
        finally:
            staged.unlink(missing_ok=True)
        self._hold(msg.content_id, [msg.sha256])

    @handler
    async def add_content(self, msg: DPAddContent) -> bool:
        manifest = msg.manifest
        held = self.library.content_ids(manifest.package_id)
        if held and self.library.manifest(held[-1]).version > manifest.version:
            self.trace(
                f"Content '{manifest.content_id}' is older than '{held[-1]}' on this DP; not added"
            )
            self._abandon(manifest.content_id)
            return False
        try:
            await self.library.add_content(manifest)
        finally:  # added: its manifest references the files; failed: the job says what next
            self.library.release(self._receiving.pop(manifest.content_id, ()))
        for old in self.library.content_ids(manifest.package_id):
            if old != manifest.content_id:
                await self.library.remove_content(old)
        self.trace(
            f"Content '{manifest.content_id}' for package '{manifest.package_id}'"
            " has been added to content library successfully"
        )
        return True

    @handler
    async def validate(self, msg: DPValidate) -> DPValidation:
        held = self.library.content_ids(msg.pkg_id)
        if not held:
            return DPValidation(msg.pkg_id, 0)
        report = await self.library.verify(held[-1])
        version = self.library.manifest(held[-1]).version
        return DPValidation(msg.pkg_id, version, report.missing, report.corrupt)

    @handler
    async def damaged(self, msg: DPDamaged) -> DPDamageReport:
        found: dict[str, str] = {}
        for item in self.library.damaged:
            pkg_id = parse_content_id(item.content_id)[0]
            if pkg_id:
                found[pkg_id] = f"{item.path}: {item.reason}"
        return DPDamageReport(found)

    @handler
    async def abandon(self, msg: DPAbandon) -> None:
        self._abandon(msg.content_id)

    def _hold(self, content_id: str, hashes: Sequence[str]) -> list[bool]:
        """Pin the stored files of ``hashes`` for a version being received (until it is
        added or abandoned); returns which are stored."""
        present = (
            self.library.hold(hashes) if content_id else [self.library.has_file(h) for h in hashes]
        )
        if content_id:
            held = self._receiving.setdefault(content_id, [])
            held.extend(h for h, there in zip(hashes, present, strict=True) if there)
        return present

    def _abandon(self, content_id: str) -> None:
        dropped = self.library.release(self._receiving.pop(content_id, ()), drop=True)
        if dropped:
            self.trace(f"Dropped {dropped} file(s) received for '{content_id}', never added")

    @handler
    async def remove_package(self, msg: DPRemovePackage) -> None:
        package = f"{msg.pkg_id}."
        for receiving in [c for c in self._receiving if c.startswith(package)]:
            self._abandon(receiving)
        for content_id in self.library.content_ids(msg.pkg_id):
            try:
                await self.library.remove_content(content_id)
            except ContentNotFound:
                continue
            self.trace(
                f"Content '{content_id}' for package '{msg.pkg_id}'"
                " has been removed from content library successfully"
            )
