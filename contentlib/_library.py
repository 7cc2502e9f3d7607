"""ContentLibrary: FileLib/DataLib/PkgLib on disk, single instance, reference counted."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import stat
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Self, TypeVar

import anyio
import anyio.to_thread
import msgspec

from contentlib import _commit, _delta, _fs, _index, _package, _paths, _recovery
from contentlib._delta import Delta
from contentlib._errors import (
    ContentLibError,
    ContentNotFound,
    CorruptPackageFile,
    HashMismatch,
    MissingBaseVersion,
    TargetNotEmpty,
    UnsafePath,
    single_error,
)
from contentlib._hop import ThreadHop
from contentlib._model import (
    DamagedManifest,
    DeltaManifest,
    DeltaPayload,
    FileEntry,
    FileSignature,
    FileState,
    Manifest,
    PkgEntry,
    SnapshotReport,
    VerifyReport,
    make_manifest,
)

T = TypeVar("T")

_sig_decoder = msgspec.msgpack.Decoder(FileSignature)

# A file up to this size is taken into the library in the library's own worker thread
# (``ThreadHop``: a much lighter hop than a thread pool's); bigger ones go to the pool,
# where they do not hold up the small ones queued behind them.
SMALL_FILE = 1 << 20
# A source up to this size is walked, copied and hashed in one worker call (a create of a
# small package: one hop instead of one per file, and no per-file task).
SMALL_SOURCE = 4 << 20


class ContentLibrary:
    """An SCCMContentLib folder. Safe for many concurrent tasks on one event loop.

    - ``FileLib/<first 4 hex>/<SHA256>``: each distinct file once.
    - ``DataLib/<content_id>.json``: one Manifest per content version, written last.
    - ``PkgLib/<package_id>.json``: the package's content versions (rebuilt from DataLib).
    - ``SigLib/<first 4 hex>/<SHA256>.sig``: chunk signatures, computed lazily and cached.
    - ``tmp/``: unique temp files; a file becomes visible only by an atomic rename.
    - ``DataLib/quarantine/``: manifests that failed their checks on open (``damaged``).

    Durability: a manifest is group-committed (``_commit``): one ``syncfs`` makes its bytes
    and every FileLib file it names durable before its name appears, and one fsync of
    DataLib makes the name durable before the caller returns; concurrent commits share both,
    those of every library of the event loop on the same filesystem too.
    Files are stored unsynced (a snapshot's, a received one, a rebuilt one): until a version
    naming them is committed a power cut may lose or tear them, and nothing references them
    yet (``collect_garbage``, run when a site starts, removes them).

    Reference counts are derived from the manifests on open, never stored, so a crash can
    neither leak a count nor delete a referenced file; ``collect_garbage`` removes files
    that no manifest references (left by a crash between removing a manifest and its files).
    Hashes being ingested are pinned so a concurrent ``remove_content`` cannot delete them.
    Opening checks every manifest, quarantines the damaged ones, removes the temp files a
    killed run left and rewrites PkgLib to match DataLib (``_recovery``). After a clean
    :meth:`aclose`, it reads the manifests from the index that wrote (``_index``) instead,
    checking again only those whose DataLib file changed since.
    """

    def __init__(self, root: str | os.PathLike[str], *, workers: int | None = None) -> None:
        """Open (or create) a library, reading every manifest on the calling thread: in async
        code prefer ``await ContentLibrary.open(root)``."""
        layout = _recovery.Layout.of(Path(root))
        self._setup(layout, _recovery.recover(layout), workers)

    @classmethod
    async def open(cls, root: str | os.PathLike[str], *, workers: int | None = None) -> Self:
        """Open (or create) a library; the manifests are read and checked in a worker thread,
        so the event loop is not blocked."""
        layout = _recovery.Layout.of(Path(root))
        opened = await anyio.to_thread.run_sync(_recovery.recover, layout)
        lib = cls.__new__(cls)
        lib._setup(layout, opened, workers)
        return lib

    def _setup(
        self, layout: _recovery.Layout, opened: _recovery.Opened, workers: int | None
    ) -> None:
        self.root = layout.root
        self._filelib = layout.filelib
        self._datalib = layout.datalib
        self._pkglib = layout.pkglib
        self._siglib = layout.siglib
        self._tmp = layout.tmp
        self.workers = workers or max(2, os.cpu_count() or 2)
        self._limiter = anyio.CapacityLimiter(self.workers)
        self._manifests: dict[str, Manifest] = opened.manifests
        self._versions: dict[str, dict[str, int]] = opened.versions
        self._damaged = opened.damaged
        self._refs: Counter[str] = opened.refs
        self._garbage_free = opened.garbage_free
        self._loose: set[str] = set()  # stored files that may have no reference (aclose)
        self._clean_index = opened.taken  # exact while nothing changes: aclose writes it back
        self._closed = False
        self._changed = False  # anything written since the open (aclose syncs it first)
        self._pins: Counter[str] = Counter()
        self._busy_ids: set[str] = set()
        self._pkg_locks: dict[str, anyio.Lock] = {}
        # Signature hashes of files a snapshot just signed, for sign_content (bounded: it
        # asks right after the snapshot; a miss reads SigLib).
        self._sig_hashes: _RecentMap = _RecentMap(4096)
        self._committer: _commit.ManifestCommitter | None = None  # the loop's, at first use
        self._hop = ThreadHop(f"contentlib {self.root.name}")

    @property
    def damaged(self) -> tuple[DamagedManifest, ...]:
        """Manifests that failed their checks on open (they do not decode, their ids or paths
        are unsafe, their content hash does not match their entries, or their file name is
        not their content id): moved to ``DataLib/quarantine/`` with their bytes, not
        indexed. While any is listed, no stored file is deleted (which files it referenced
        cannot be known). One leaves the list when a valid manifest of its content id is
        added (a redistribute: a content id always names the same files), or when a human
        deletes it from the quarantine (or repairs it and moves it back) and reopens."""
        return self._damaged

    # ----------------------------------------------------------------- queries

    def manifest(self, content_id: str) -> Manifest:
        try:
            return self._manifests[content_id]
        except KeyError:
            raise ContentNotFound(f"content {content_id!r} is not in {self.root}") from None

    def content_ids(self, package_id: str) -> list[str]:
        """Content versions of a package present in the library, oldest first."""
        return list(self._pkg_entry(package_id).content_ids)

    def package_ids(self) -> list[str]:
        """Every package the library holds a content version of, sorted."""
        return sorted(self._versions)

    def has_file(self, sha256: str) -> bool:
        return self.file_path(sha256).exists()

    def _stored_size(self, sha256: str) -> int:
        """The size of the stored copy (one stat); -1 when it is missing."""
        try:
            return os.stat(self.file_path(sha256)).st_size
        except FileNotFoundError:
            return -1

    def file_path(self, sha256: str) -> Path:
        _paths.check_sha256(sha256)
        return self._filelib / sha256[:4] / sha256

    def references(self, sha256: str) -> int:
        """How many content versions reference a file."""
        return self._refs[sha256]

    async def read_stream(
        self, sha256: str, chunk_size: int = 1 << 20, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """A stored file, or ``length`` bytes of it from ``offset``, as chunks of chunk_size.

        Not verified here (a range cannot be): the receiver hashes what it gets, and
        ``verify_file`` checks a stored copy."""
        path = self.file_path(sha256)
        if not path.exists():
            raise ContentNotFound(f"file {sha256} is not in {self.root}")
        f = await self._thread(_fs.open_read, path)
        try:
            await self._thread(f.seek, offset)
            remaining = -1 if length is None else length
            while remaining:
                n = chunk_size if remaining < 0 else min(chunk_size, remaining)
                chunk = await self._thread(f.read, n)
                if not chunk:
                    break
                remaining -= len(chunk) if remaining > 0 else 0
                yield chunk
        finally:
            f.close()

    # ----------------------------------------------------------------- ingest

    async def snapshot(
        self,
        package_id: str,
        source: str | os.PathLike[str],
        content_id: str,
        *,
        sign: bool = False,
    ) -> SnapshotReport:
        """Ingest a source folder as a new content version (see ``_fs.walk_source`` for its
        rule on symlinks, special files and names). Each file is hashed while it is copied
        in, in one worker thread per file; the manifest is written last. A small source
        (``SMALL_SOURCE`` bytes at most) is walked, copied and hashed in ONE worker call.
        ``sign``: compute each file's chunk signature too while its bytes are hot (what
        :meth:`sign_content` does, which then answers without reading anything again).

        Errors name the source's relative path: UnsafePath for a link, a special file or a
        bad name, SourceError for a source or file that is missing or vanishes meanwhile; an
        OSError of the library's own disk (ENOSPC) is raised as it is. On any error the
        library is as it was: files this snapshot stored and nothing references go again."""
        _paths.check_package_id(package_id)
        version = _paths.content_version(content_id)
        if content_id in self._manifests:
            raise ContentLibError(f"content {content_id!r} already exists")
        src = Path(source)
        previous = self._latest(package_id)
        known = {f.path: f for f in previous.files} if previous else {}
        walked, taken = await self._thread(self._take_small, src, known, sign)
        listing = [e for e in walked if not stat.S_ISDIR(e[2].st_mode)]
        empty_dirs = [rel for rel, _, st in walked if stat.S_ISDIR(st.st_mode)]
        entries: list[FileEntry] = []
        pinned: list[str] = []
        stored_here: list[str] = []
        totals = {"read": 0, "stored": 0, "shared": 0}
        todo = iter(listing)

        def add(rel: str, st: os.stat_result, sha: str, size: int, stored: bool) -> None:
            entries.append(FileEntry(rel, size, sha, st.st_mode & 0o7777))
            totals["read"] += size
            totals["stored"] += size if stored else 0
            totals["shared"] += 0 if stored else 1
            if stored:
                stored_here.append(sha)

        async def worker() -> None:
            for rel, path, st in todo:
                with _fs.source_file(src, rel, path):
                    t = await self._thread(self._take_one, rel, path, st, known.get(rel), sign)
                await self._place_taken(src, [t], pinned, add)

        with self._reserve(content_id):
            try:
                if taken is not None:
                    await self._place_taken(src, taken, pinned, add)
                else:
                    with single_error():
                        async with anyio.create_task_group() as tg:
                            for _ in range(min(self.workers, max(1, len(listing)))):
                                tg.start_soon(worker)
                # The files are not synced one by one: the manifest's group commit syncs
                # the filesystem before the manifest exists.
                manifest = make_manifest(content_id, package_id, version, entries, empty_dirs)
                await self._commit(manifest)
            finally:
                self._unpin(pinned)
                if content_id not in self._manifests:  # failed: the library as it was
                    self._drop_unreferenced(stored_here)
        return SnapshotReport(manifest, totals["read"], totals["stored"], totals["shared"])

    def _take_small(
        self, src: Path, known: dict[str, FileEntry], sign: bool
    ) -> tuple[list[_fs.Walked], list[_Taken] | None]:
        """In a worker thread: the source walked and, when it is small, every file copied
        into tmp/ and hashed (and signed), or found unchanged since ``known``; None when
        it is not small (its files then go one worker call each)."""
        walked = list(_fs.walk_source(src))
        files = [e for e in walked if not stat.S_ISDIR(e[2].st_mode)]
        if sum(st.st_size for _, _, st in files) > SMALL_SOURCE:
            return walked, None
        taken: list[_Taken] = []
        try:
            for rel, path, st in files:
                with _fs.source_file(src, rel, path):
                    taken.append(self._take_one(rel, path, st, known.get(rel), sign))
        except BaseException:
            for t in taken:
                if t.tmp is not None:
                    t.tmp.unlink(missing_ok=True)
            raise
        return walked, taken

    def _take_one(
        self, rel: str, path: Path, st: os.stat_result, before: FileEntry | None, sign: bool
    ) -> _Taken:
        """One source file, in the calling worker thread: hashed (and, if it changed since
        ``before``, copied into tmp/ while hashed); its signature from the temp copy (the
        stored file may not be there yet)."""
        tmp: Path | None = None
        unchanged = False
        if before is not None and self._stored_size(before.sha256) == before.size:
            # Probably unchanged since the last version: hash only, copy only if it changed.
            # The stored copy is checked by its size (a stat), not rehashed: that would
            # double the cost of every update. A copy of the wrong size is replaced from
            # the source; a same-size corruption is for verify and repair_file.
            sha, size = _fs.hash_regular(path)
            unchanged = sha == before.sha256
        if not unchanged:
            tmp = _fs.temp_name(self._tmp)
            sha, size = _fs.copy_hashing(path, tmp, fsync=False)
        try:
            sig = self._signature(sha, tmp).sig_hash if sign else ""
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
        return _Taken(rel, path, st, sha, size, tmp, sig)

    async def _place_taken(
        self,
        src: Path,
        taken: list[_Taken],
        pinned: list[str],
        add: Callable[[str, os.stat_result, str, int, bool], None],
    ) -> None:
        """On the loop: pin and place what ``_take_one`` took (temp files not placed
        are deleted on an error)."""
        for i, t in enumerate(taken):
            try:
                if t.tmp is not None:
                    sha, size, stored = t.sha, t.size, self._place(t.sha, t.tmp, pinned)
                elif self._pin_if_present(t.sha, pinned):
                    sha, size, stored = t.sha, t.size, False
                else:  # the stored copy went meanwhile: copied in after all
                    with _fs.source_file(src, t.rel, t.path):
                        again = await self._thread(self._take_one, t.rel, t.path, t.st, None, False)
                    assert again.tmp is not None  # no ``before``: always copied
                    sha, size, stored = (
                        again.sha,
                        again.size,
                        self._place(again.sha, again.tmp, pinned),
                    )
            except BaseException:
                for later in taken[i:]:
                    if later.tmp is not None:
                        later.tmp.unlink(missing_ok=True)
                raise
            if t.sig and sha == t.sha:
                self._sig_hashes[sha] = t.sig
            add(t.rel, t.st, sha, size, stored)

    def _pin_if_present(self, sha: str, pinned: list[str]) -> bool:
        # No await between the check and the pin: a concurrent remove cannot slip in.
        if not self.has_file(sha):
            return False
        self._pins[sha] += 1
        pinned.append(sha)
        return True

    def _place(
        self, sha: str, tmp: Path, pinned: list[str] | None, *, replace: bool = False
    ) -> bool:
        """Pin sha and move a verified temp file into FileLib; False if it was already there.

        A stored copy whose size is not the verified file's is damaged: it is replaced."""
        self._check_open()
        self._clean_index = None
        self._changed = True
        self._loose.add(sha)  # unreferenced until a version names it
        if pinned is not None:
            self._pins[sha] += 1
            pinned.append(sha)
        final = self.file_path(sha)
        stored = self._stored_size(sha)
        if stored >= 0 and not replace and stored == os.stat(tmp).st_size:
            tmp.unlink()
            return False
        try:
            os.replace(tmp, final)
        except FileNotFoundError:  # the first file of its folder (not an mkdir per file)
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
        if stored >= 0:  # a cached signature may describe the damaged copy
            self._sig_path(sha).unlink(missing_ok=True)
        return True

    def _unpin(self, pinned: Iterable[str]) -> None:
        for sha in pinned:
            self._pins[sha] -= 1
            if self._pins[sha] <= 0:
                del self._pins[sha]

    async def add_file_stream(self, sha256: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        """Store a received file; it becomes visible only after its size and hash match."""
        _paths.check_sha256(sha256)
        tmp = _fs.temp_name(self._tmp)
        writer = await self._thread(_fs.HashingWriter, tmp)
        try:
            async for chunk in chunks:
                await self._thread(writer.write, chunk)
                if writer.size > size:
                    raise HashMismatch(f"file {sha256}: more than the announced {size} bytes")
            await self._thread(writer.finish)
            _check(sha256, size, writer.sha256(), writer.size)
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
        self._place(sha256, tmp, None)
        await self._thread(_fs.fsync_dir, self.file_path(sha256).parent)

    async def add_file_from_path(
        self,
        sha256: str,
        size: int,
        path: str | os.PathLike[str],
        *,
        move: bool = False,
        replace: bool = False,
        verified: bool = False,
    ) -> None:
        """Store a staged file after checking its size and hash.

        ``move``: take the staged file itself (renamed into the library's private tmp/ first,
        then hashed there, so nobody can change it between check and use; copied when it is
        on another filesystem). ``replace``: overwrite a stored copy (a redistribute repairs
        a damaged file). ``verified`` (with ``move``): the caller hashed the file as it
        wrote it, found ``sha256`` and has not let anyone else write it since; the moved
        file is then checked by its size only, not read again (a download verified on the
        way costs one pass over its bytes, not two). A copy across filesystems is still
        hashed."""
        _paths.check_sha256(sha256)
        tmp = _fs.temp_name(self._tmp)

        def take() -> tuple[str, int]:
            if move:
                try:
                    _fs.check_regular(Path(path))
                    os.replace(path, tmp)
                    os.chmod(tmp, 0o644)
                    if verified:
                        return sha256, tmp.stat().st_size
                    return _fs.hash_file(tmp)
                except OSError as e:
                    if e.errno != errno.EXDEV:
                        raise
            return _fs.copy_hashing(Path(path), tmp)

        def store() -> None:
            # One worker-thread hop: take, check, place. A new file is made durable by the
            # group commit of the version that names it (see the class docstring); one that
            # replaces a stored copy is synced here, since versions already name it.
            try:
                got_sha, got_size = take()
                _check(sha256, size, got_sha, got_size)
                if move and replace:
                    _fs.fsync_file(tmp)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self._place(sha256, tmp, None, replace=replace)
            if replace:
                _fs.fsync_dir(self.file_path(sha256).parent)

        if size <= SMALL_FILE and not replace:  # no sync in it: a few tens of microseconds
            await self._hop.run(store)
        else:
            await self._thread(store)

    async def add_content(self, manifest: Manifest) -> None:
        """Add a version whose files are all present; writes DataLib and PkgLib last."""
        _paths.check_manifest(manifest)
        existing = self._manifests.get(manifest.content_id)
        if existing is not None:
            if existing.content_hash == manifest.content_hash:
                return
            raise ContentLibError(f"content {manifest.content_id!r} exists with other files")
        pinned: list[str] = []
        with self._reserve(manifest.content_id):
            try:
                missing = [
                    f.path for f in manifest.files if not self._pin_if_present(f.sha256, pinned)
                ]
                if missing:
                    raise ContentLibError(
                        f"content {manifest.content_id!r}: files not in the library: "
                        + ", ".join(missing[:20])
                        + (" ..." if len(missing) > 20 else "")
                    )
                await self._commit(manifest)
            finally:
                self._unpin(pinned)

    async def _commit(self, manifest: Manifest) -> None:
        """Write the manifest (the version becomes visible), count references, update PkgLib.

        The caller holds a reservation of the content id and pins on every file."""
        self._check_open()
        self._clean_index = None
        self._changed = True
        path = self._datalib / f"{manifest.content_id}.json"
        data = msgspec.json.encode(manifest)
        pkg = manifest.package_id
        async with self._pkg_lock(pkg):
            versions = {**self._versions.get(pkg, {}), manifest.content_id: manifest.version}
            entry = PkgEntry.of(pkg, versions)
            # Group-committed with every other manifest being written on this filesystem,
            # whichever library it belongs to (_commit.py).
            if self._committer is None:
                self._committer = _commit.for_folder(self._datalib)
            await self._committer.commit(
                path, data, (self._pkglib_path(pkg), msgspec.json.encode(entry))
            )
            self._index(manifest)
        self._refs.update(manifest.hashes())
        self._loose.difference_update(manifest.hashes())
        # A content id always names the same files: a damaged copy of this manifest is
        # resolved (a redistribute repaired it), its quarantined bytes stay for a human.
        self._damaged = tuple(d for d in self._damaged if d.content_id != manifest.content_id)

    # ----------------------------------------------------------------- removal, checks

    async def remove_content(self, content_id: str) -> None:
        """Remove a version; files go only when no manifest references them (nor an ingest)."""
        manifest = self.manifest(content_id)
        self._check_open()
        self._clean_index = None
        self._changed = True
        with self._reserve(content_id):
            await self._thread(self._remove_manifest_file, content_id)
            del self._manifests[content_id]
            versions = self._versions[manifest.package_id]
            del versions[content_id]
            if not versions:
                del self._versions[manifest.package_id]
            self._refs.subtract(manifest.hashes())
            self._drop_unreferenced(manifest.hashes())
            await self._write_pkglib(manifest.package_id)

    def _remove_manifest_file(self, content_id: str) -> None:
        (self._datalib / f"{content_id}.json").unlink()
        _fs.fsync_dir(self._datalib)

    def _drop_unreferenced(self, hashes: Iterable[str]) -> int:
        """Delete the files of hashes no manifest references and no ingest pins; the count.

        Nothing while a manifest is damaged: it may have referenced any of them. No await
        inside, so no ingest can pin one mid-way."""
        removed = 0
        for sha in hashes:
            if self._refs[sha] > 0:
                continue
            self._refs.pop(sha, None)
            if not self._damaged and not self._pins[sha]:
                self.file_path(sha).unlink(missing_ok=True)
                self._sig_path(sha).unlink(missing_ok=True)
                self._loose.discard(sha)
                self._changed = True
                removed += 1
            else:  # kept for now: garbage at the latest when the library closes
                self._loose.add(sha)
        return removed

    def hold(self, hashes: Iterable[str]) -> list[bool]:
        """Pin each stored file of ``hashes`` (no removal deletes it until :meth:`release`):
        a receiver that was told "you have it" keeps it until the version that needs it is
        committed. Returns which were present (only those are pinned)."""
        pinned: list[str] = []
        return [self._pin_if_present(sha, pinned) for sha in hashes]

    def release(self, hashes: Iterable[str], *, drop: bool = False) -> int:
        """Unpin files :meth:`hold` pinned; with ``drop``, delete those no manifest references
        and nobody else pins (a version abandoned before its manifest was written: its files
        would otherwise wait for the next :meth:`collect_garbage`). Returns how many went."""
        hashes = list(hashes)
        self._unpin(hashes)
        return self._drop_unreferenced(hashes) if drop else 0

    async def collect_garbage(self, *, if_needed: bool = False) -> int:
        """Delete FileLib files no manifest references and no ingest pins; returns the count.

        Deletes nothing while ``damaged`` lists a manifest: which files it referenced cannot
        be known, so any unreferenced file may be one of them (``remove_content`` keeps its
        files then too). ``if_needed``: nothing to do (no scan of FileLib) when the library
        is known to hold no such file: it was opened after a clean :meth:`aclose` that left
        none, and no manifest was deleted or changed on disk while it was closed."""
        if if_needed and self._garbage_free:
            return 0
        refs = self._refs

        def unreferenced() -> list[str]:  # a library holds tens of thousands: not on the loop
            return [n for n in _stored_names(self._filelib) if _paths.is_sha256(n) and refs[n] <= 0]

        # Checked again on the loop (a version may have named one meanwhile).
        removed = self._drop_unreferenced(await self._thread(unreferenced))
        self._garbage_free = not self._damaged
        return removed

    async def aclose(self) -> None:
        """Close the library: stored files no version names go (a receive or an ingest the
        shutdown stopped), then an index of the manifests is written durably, so that the
        next open reads it instead of every manifest (``_index``). Call it last, after
        every task using the library has ended: it must not change after this. A library
        that is never closed (a kill, a failure) is fully checked at its next open."""
        if self._closed:
            return
        self._closed = True
        self._drop_unreferenced(list(self._loose))
        garbage_free = (
            self._garbage_free
            and not self._damaged
            and all(self._refs[sha] > 0 for sha in self._loose)
        )
        if self._clean_index is not None and garbage_free == self._clean_index.garbage_free:
            await self._thread(_index.write_again, self.root, self._clean_index)
            return
        manifests = list(self._manifests.values())
        sync = self._changed
        await self._thread(
            partial(_index.write, sync=sync), self.root, self._datalib, manifests, garbage_free
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ContentLibError(f"the library {self.root} is closed")

    async def verify_file(self, sha256: str) -> FileState:
        """Rehash one stored file (a full read): "ok", "missing" or "corrupt"."""
        path = self.file_path(sha256)
        try:
            got, _ = await self._thread(_fs.hash_file, path)
        except FileNotFoundError:
            return "missing"
        return "ok" if got == sha256 else "corrupt"

    async def verify(self, content_id: str) -> VerifyReport:
        """Content validation: rehash every file; report missing and corrupt paths."""
        manifest = self.manifest(content_id)
        state: dict[str, FileState] = {}

        async def check(sha: str) -> None:
            state[sha] = await self.verify_file(sha)

        await self._each(sorted(manifest.hashes()), check)
        missing = tuple(f.path for f in manifest.files if state[f.sha256] == "missing")
        corrupt = tuple(f.path for f in manifest.files if state[f.sha256] == "corrupt")
        return VerifyReport(content_id, missing, corrupt)

    async def repair_file(
        self, sha256: str, size: int, source_path: str | os.PathLike[str]
    ) -> bool:
        """Replace the stored copy of a file (damaged or missing) from source_path if the
        source still holds those bytes: copied in, hashed, fsynced, renamed over it; True.
        False, the library untouched, when the source hashes to anything else, is missing or
        is not a regular file. Other errors (ENOSPC, a source that cannot be read) raise."""
        _paths.check_sha256(sha256)
        try:
            await self.add_file_from_path(sha256, size, source_path, replace=True)
        except (HashMismatch, UnsafePath, FileNotFoundError):
            return False
        return True

    async def extract(self, content_id: str, out_dir: str | os.PathLike[str]) -> None:
        """Rebuild the source folder of a version (modes too) as out_dir.

        out_dir must be absent or an empty folder (TargetNotEmpty, before anything is
        written). Every file is hashed as it is copied: a damaged stored file raises
        HashMismatch, a missing one ContentNotFound, each naming the package path. The files
        go to a temp folder beside out_dir that is synced and renamed into place at the end,
        so out_dir appears whole or not at all (a kill can leave a hidden
        ``.extract-*.tmp`` folder beside it)."""
        manifest = self.manifest(content_id)
        out = Path(out_dir)
        work = await self._thread(_extract_begin, out)

        async def one(entry: FileEntry) -> None:
            src = self.file_path(entry.sha256)
            await self._thread(_extract_file, content_id, src, work, entry)

        try:
            await self._each(manifest.files, one)
            await self._thread(_extract_finish, work, out, manifest.dirs)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._thread(shutil.rmtree, work, True)
            raise

    # ----------------------------------------------------------------- signatures

    def _sig_path(self, sha256: str) -> Path:
        return self._siglib / sha256[:4] / f"{sha256}.sig"

    async def signature(self, sha256: str) -> FileSignature:
        """The FastCDC chunk signature of a stored file (computed once, then cached)."""
        return await self._thread(self._signature, sha256)

    async def sign_content(self, content_id: str) -> str:
        """Compute (or find cached) the signature of every file of a content, as the
        product creates RDC signatures when it stores a version, in one worker call;
        returns their hash: the SHA-256 over each file's signature hash, in order."""
        files = self.manifest(content_id).files
        known = [self._sig_hashes.get(entry.sha256) for entry in files]
        if all(known):  # signed by the snapshot that stored them: nothing to read
            return hashlib.sha256("".join(known).encode()).hexdigest().upper()  # type: ignore[arg-type]

        def sign_all() -> str:
            digest = hashlib.sha256()
            for entry in files:
                digest.update(self._signature(entry.sha256).sig_hash.encode())
            return digest.hexdigest().upper()

        return await self._thread(sign_all)

    def _signature(self, sha256: str, copy: Path | None = None) -> FileSignature:
        """The cached signature, or computed from the stored file (or from ``copy``, a
        verified copy of it) and cached."""
        from contentlib import _signature

        sig_path = self._sig_path(sha256)
        try:
            return _sig_decoder.decode(sig_path.read_bytes())
        except (FileNotFoundError, msgspec.DecodeError):
            pass
        path = copy or self.file_path(sha256)
        if not path.exists():
            raise ContentNotFound(f"file {sha256} is not in {self.root}")
        sig = _signature.compute(path, sha256)
        data = msgspec.msgpack.encode(sig)
        try:  # a cache, rebuilt when unreadable: no fsync
            _fs.atomic_write(sig_path, data, durable=False)
        except FileNotFoundError:  # the first signature of its folder
            sig_path.parent.mkdir(exist_ok=True)
            _fs.atomic_write(sig_path, data, durable=False)
        return sig

    # ----------------------------------------------------------------- deltas

    async def file_delta(self, old_sha256: str, new_sha256: str) -> Delta:
        """An encoded delta old -> new (both stored): zstd with old as reference when both fit
        ``_delta.REFERENCE_CAP``, else copy/literal ranges from old's signature."""
        tmp = await self._encode_delta(old_sha256, new_sha256)
        try:
            return Delta(await self._thread(tmp.read_bytes))
        finally:
            tmp.unlink()

    async def file_delta_from_signature(self, old_sig: FileSignature, new_sha256: str) -> Delta:
        """A copy/literal delta for a receiver that holds the old file and sent its signature."""
        new = self._existing(new_sha256)
        tmp = _fs.temp_name(self._tmp)
        try:
            await self._thread(_write_with, tmp, _delta.encode_copy_literal, old_sig, new)
            return Delta(await self._thread(tmp.read_bytes))
        finally:
            tmp.unlink(missing_ok=True)

    async def _encode_delta(self, old_sha256: str, new_sha256: str) -> Path:
        old, new = self._existing(old_sha256), self._existing(new_sha256)
        tmp = _fs.temp_name(self._tmp)
        try:
            if _delta.use_reference(old.stat().st_size, new.stat().st_size):
                await self._thread(_write_with, tmp, _delta.encode_reference, old, new)
            else:
                sig = await self.signature(old_sha256)
                await self._thread(_write_with, tmp, _delta.encode_copy_literal, sig, new)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    async def apply_file_delta(
        self, old_sha256: str, delta: bytes, new_sha256: str, new_size: int
    ) -> str:
        """Rebuild new from the stored old file and a delta; stored only if size and SHA-256
        match. Returns new_sha256."""
        _paths.check_sha256(new_sha256)
        old = self._existing(old_sha256)
        tmp = _fs.temp_name(self._tmp)

        def build() -> tuple[str, int]:
            writer = _fs.HashingWriter(tmp)
            try:
                _delta.apply(old, io.BytesIO(delta), writer, new_size)
                writer.finish()
            finally:
                writer.close()
            return writer.sha256(), writer.size

        try:
            got_sha, got_size = await self._thread(build)
            _check(new_sha256, new_size, got_sha, got_size)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._place(new_sha256, tmp, None)  # durable with the version that names it
        return new_sha256

    # ----------------------------------------------------------------- package files

    async def write_pck(self, content_id: str, out_path: str | os.PathLike[str]) -> None:
        """A PCK: the whole version as tar+zstd, manifest first."""
        manifest = self.manifest(content_id)
        pinned: list[str] = []
        try:
            missing = [f.path for f in manifest.files if not self._pin_if_present(f.sha256, pinned)]
            if missing:
                raise ContentNotFound(f"{content_id}: files missing: {', '.join(missing[:20])}")
            await self._thread(_package.write_pck, manifest, self.file_path, Path(out_path))
        finally:
            self._unpin(pinned)

    async def write_dlt(
        self, old_content_id: str, new_content_id: str, out_path: str | os.PathLike[str]
    ) -> None:
        """A DLT: version old -> new as removed paths, changed entries, and each file the old
        version lacks, as a delta against its old counterpart (same path, else same name)
        where that is smaller than the file."""
        base, new = self.manifest(old_content_id), self.manifest(new_content_id)
        if base.package_id != new.package_id:
            raise ContentLibError(f"{old_content_id} and {new_content_id} are not one package")
        by_path = {f.path: f for f in base.files}
        new_paths = {f.path for f in new.files}
        removed = tuple(sorted(p for p in by_path if p not in new_paths))
        changed = tuple(f for f in new.files if by_path.get(f.path) != f)
        by_name = {f.path.rsplit("/", 1)[-1]: f for f in base.files if f.path in set(removed)} | {
            f.path.rsplit("/", 1)[-1]: by_path[f.path] for f in changed if f.path in by_path
        }
        base_hashes = base.hashes()
        wanted: dict[str, tuple[int, str]] = {}
        for f in changed:
            if f.sha256 in base_hashes or f.sha256 in wanted:
                continue
            ref = by_path.get(f.path) or by_name.get(f.path.rsplit("/", 1)[-1])
            wanted[f.sha256] = (f.size, ref.sha256 if ref and ref.size else "")
        deltas: dict[str, Path] = {}
        pinned: list[str] = []

        async def encode(sha: str) -> None:
            size, ref = wanted[sha]
            if ref and size:
                tmp = await self._encode_delta(ref, sha)
                deltas[sha] = tmp
                if (await self._thread(os.path.getsize, tmp)) >= size:
                    del deltas[sha]
                    tmp.unlink()

        try:
            for sha in base_hashes | new.hashes():
                if not self._pin_if_present(sha, pinned):
                    raise ContentNotFound(f"{new_content_id}: file {sha} is missing")
            await self._each(sorted(wanted), encode)
            payloads = tuple(
                DeltaPayload(sha, size, ref if sha in deltas else "")
                for sha, (size, ref) in sorted(wanted.items())
            )
            delta = DeltaManifest(
                new.package_id,
                base.content_id,
                base.content_hash,
                new.content_id,
                new.version,
                new.content_hash,
                removed,
                changed,
                payloads,
                new.dirs,
            )
            await self._thread(_package.write_dlt, delta, self.file_path, deltas, Path(out_path))
        finally:
            self._unpin(pinned)
            for tmp in deltas.values():
                tmp.unlink(missing_ok=True)

    async def add_from_pck(self, path: str | os.PathLike[str]) -> Manifest:
        """Add the version a PCK holds; every file is verified first; nothing changes on error."""
        return await self._add_package_file(Path(path))

    async def add_from_dlt(self, path: str | os.PathLike[str]) -> Manifest:
        """Add version N+1 from a DLT and version N (MissingBaseVersion if N is absent)."""
        return await self._add_package_file(Path(path))

    async def _add_package_file(self, path: Path) -> Manifest:
        stage = _fs.temp_name(self._tmp, "stage-")

        def resolve(delta: DeltaManifest) -> Manifest:
            _paths.check_package_id(delta.package_id)
            _paths.content_version(delta.base_content_id)
            base = self._manifests.get(delta.base_content_id)
            if base is None or base.content_hash != delta.base_content_hash:
                raise MissingBaseVersion(
                    f"{path}: needs {delta.base_content_id} ({delta.base_content_hash})"
                    f" in {self.root}"
                )
            manifest = delta.apply_to(base)
            if manifest.content_hash != delta.content_hash:
                raise CorruptPackageFile(f"{path}: changes do not give the announced content")
            return manifest

        def base_file(delta: DeltaManifest, sha: str) -> Path:
            if sha not in self._manifests[delta.base_content_id].hashes():
                raise CorruptPackageFile(f"{path}: delta against {sha}, not in the base version")
            base = self.file_path(sha)
            if not base.exists():
                raise MissingBaseVersion(f"{path}: base file {sha} is missing")
            return base

        def read() -> tuple[Manifest, dict[str, Path]]:
            stage.mkdir()
            manifest, staged, _ = _package.read_package(path, stage, base_file, resolve)
            return manifest, staged

        try:
            manifest, staged = await self._thread(read)
            return await self._commit_staged(manifest, staged)
        finally:
            await self._thread(_remove_stage, stage)

    async def _commit_staged(self, manifest: Manifest, staged: dict[str, Path]) -> Manifest:
        existing = self._manifests.get(manifest.content_id)
        if existing is not None:
            if existing.content_hash == manifest.content_hash:
                return existing
            raise ContentLibError(f"content {manifest.content_id!r} exists with other files")
        pinned: list[str] = []
        with self._reserve(manifest.content_id):
            try:
                # Checked before anything moves: a failure here leaves the library as it was.
                missing = [
                    f.path
                    for f in manifest.files
                    if f.sha256 not in staged and not self._pin_if_present(f.sha256, pinned)
                ]
                if missing:
                    raise ContentLibError(
                        f"content {manifest.content_id!r}: files not in the library: "
                        + ", ".join(missing[:20])
                    )
                for sha, tmp in staged.items():
                    self._place(sha, tmp, pinned)
                await self._commit(manifest)  # its sync covers the files placed here
            finally:
                self._unpin(pinned)
        return manifest

    def _existing(self, sha256: str) -> Path:
        path = self.file_path(sha256)
        if not path.exists():
            raise ContentNotFound(f"file {sha256} is not in {self.root}")
        return path

    # ----------------------------------------------------------------- helpers

    def _latest(self, package_id: str) -> Manifest | None:
        ids = self._pkg_entry(package_id).content_ids
        return self._manifests[ids[-1]] if ids else None

    def _index(self, manifest: Manifest) -> None:
        self._manifests[manifest.content_id] = manifest
        self._versions.setdefault(manifest.package_id, {})[manifest.content_id] = manifest.version

    def _pkg_entry(self, package_id: str) -> PkgEntry:
        # From the per-package index: asked on every transfer, so not a scan of all manifests.
        return PkgEntry.of(package_id, self._versions.get(package_id, {}))

    def _pkg_lock(self, package_id: str) -> anyio.Lock:
        return self._pkg_locks.setdefault(package_id, anyio.Lock())

    def _pkglib_path(self, package_id: str) -> Path:
        return self._pkglib / f"{package_id}.json"

    async def _write_pkglib(self, package_id: str) -> None:
        async with self._pkg_lock(package_id):  # the entry is computed inside the lock
            entry = self._pkg_entry(package_id)
            path = self._pkglib_path(package_id)
            if entry.content_ids:
                # Not synced: PkgLib is rebuilt from DataLib when the library opens.
                data = msgspec.json.encode(entry)
                await self._thread(partial(_fs.atomic_write, path, data, durable=False))
            else:
                await self._thread(path.unlink, True)

    def _reserve(self, content_id: str) -> _Reservation:
        return _Reservation(self._busy_ids, content_id)

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def _each(self, items: Iterable[T], fn: Callable[[T], Any]) -> None:
        """Run fn over items with one task per worker thread."""
        it: Iterator[T] = iter(items)

        async def worker() -> None:
            for item in it:
                await fn(item)

        with single_error():
            async with anyio.create_task_group() as tg:
                for _ in range(self.workers):
                    tg.start_soon(worker)


class _Taken(NamedTuple):
    """A source file taken in by ``_take_one``: its copy in tmp/ (None: unchanged, its
    stored copy is used)."""

    rel: str
    path: Path
    st: os.stat_result
    sha: str
    size: int
    tmp: Path | None
    sig: str  # its signature hash ("" unless signed)


class _RecentMap(dict[str, str]):
    """A dict that forgets everything when it holds more than ``cap`` entries."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self._cap = cap

    def __setitem__(self, key: str, value: str) -> None:
        if len(self) >= self._cap:
            self.clear()
        super().__setitem__(key, value)


class _Reservation:
    """Marks a content id as being written or removed, so two tasks cannot race on it."""

    def __init__(self, busy: set[str], content_id: str) -> None:
        self._busy = busy
        self._id = content_id

    def __enter__(self) -> None:
        if self._id in self._busy:
            raise ContentLibError(f"content {self._id!r} is being changed by another task")
        self._busy.add(self._id)

    def __exit__(self, *exc: object) -> None:
        self._busy.discard(self._id)


def _check(sha256: str, size: int, got_sha: str, got_size: int) -> None:
    if got_size != size:
        raise HashMismatch(f"file {sha256}: got {got_size} bytes, expected {size}")
    if got_sha != sha256:
        raise HashMismatch(f"file {sha256}: content hashes to {got_sha}")


def _stored_names(filelib: Path) -> list[str]:
    """The names in FileLib's folders (scandir: a library holds tens of thousands)."""
    names: list[str] = []
    with os.scandir(filelib) as folders:
        for folder in folders:
            if folder.is_dir(follow_symlinks=False):
                with os.scandir(folder.path) as files:
                    names.extend(f.name for f in files)
    return names


def _remove_stage(stage: Path) -> None:
    """A staging folder: mostly empty by now (its files were placed), so one rmdir."""
    try:
        os.rmdir(stage)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(stage, ignore_errors=True)


def _write_with(path: Path, encode: Callable[..., None], *args: Any) -> None:
    with open(path, "xb") as out:
        encode(*args, out)


def _extract_begin(out: Path) -> Path:
    """Refuse a target that holds anything; a new temp folder beside it."""
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISDIR(st.st_mode) or _has_entries(out):
            raise TargetNotEmpty(f"{out} exists and is not an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = _fs.temp_name(out.parent, "extract-")
    work.mkdir()
    return work


def _has_entries(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return next(it, None) is not None


def _extract_file(content_id: str, src: Path, root: Path, entry: FileEntry) -> None:
    """Copy one stored file into root, hashing what was written."""
    target = _paths.target_in(root, entry.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        got_sha, got_size = _fs.copy_hashing(src, target, fsync=False)
    except FileNotFoundError as e:
        if e.filename is None or os.fspath(e.filename) != os.fspath(src):
            raise
        raise ContentNotFound(
            f"{content_id}: file {entry.path!r} ({entry.sha256}) is missing from the library"
        ) from e
    if (got_sha, got_size) != (entry.sha256, entry.size):
        raise HashMismatch(
            f"{content_id}: stored file of {entry.path!r} is damaged: expected {entry.sha256}"
            f" ({entry.size} bytes), got {got_sha} ({got_size} bytes)"
        )
    os.chmod(target, entry.mode)


def _extract_finish(work: Path, out: Path, empty_dirs: tuple[str, ...]) -> None:
    for rel in empty_dirs:
        _paths.target_in(work, rel).mkdir(parents=True, exist_ok=True)
    _fs.sync_filesystem(work)  # the data before the rename that makes it look complete
    try:
        os.rename(work, out)  # replaces an empty folder, fails on a non-empty one
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        raise TargetNotEmpty(f"{out} was filled while extracting into it") from e
    _fs.fsync_dir(out.parent)
