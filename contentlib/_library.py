"""ContentLibrary: FileLib/DataLib/PkgLib on disk, single instance, reference counted."""

from __future__ import annotations

import errno
import io
import os
import shutil
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec

from contentlib import _delta, _fs, _package, _paths
from contentlib._delta import Delta
from contentlib._errors import (
    ContentLibError,
    ContentNotFound,
    CorruptPackageFile,
    HashMismatch,
    MissingBaseVersion,
)
from contentlib._model import (
    DeltaManifest,
    DeltaPayload,
    FileEntry,
    FileSignature,
    Manifest,
    PkgEntry,
    SnapshotReport,
    VerifyReport,
    make_manifest,
)

T = TypeVar("T")

_manifest_decoder = msgspec.json.Decoder(Manifest)
_pkg_decoder = msgspec.json.Decoder(PkgEntry)
_sig_decoder = msgspec.msgpack.Decoder(FileSignature)


class ContentLibrary:
    """An SCCMContentLib folder. Safe for many concurrent tasks on one event loop.

    - ``FileLib/<first 4 hex>/<SHA256>``: each distinct file once.
    - ``DataLib/<content_id>.json``: one Manifest per content version, written last.
    - ``PkgLib/<package_id>.json``: the package's content versions (rebuilt from DataLib).
    - ``SigLib/<first 4 hex>/<SHA256>.sig``: chunk signatures, computed lazily and cached.
    - ``tmp/``: unique temp files; a file becomes visible only by an atomic rename.

    Reference counts are derived from the manifests on open, never stored, so a crash can
    neither leak a count nor delete a referenced file; ``collect_garbage`` removes files
    that no manifest references (left by a crash between removing a manifest and its files).
    Hashes being ingested are pinned so a concurrent ``remove_content`` cannot delete them.
    """

    def __init__(self, root: str | os.PathLike[str], *, workers: int | None = None) -> None:
        self.root = Path(root)
        self._filelib = self.root / "FileLib"
        self._datalib = self.root / "DataLib"
        self._pkglib = self.root / "PkgLib"
        self._siglib = self.root / "SigLib"
        self._tmp = self.root / "tmp"
        for d in (self._filelib, self._datalib, self._pkglib, self._siglib, self._tmp):
            d.mkdir(parents=True, exist_ok=True)
        for stale in self._tmp.iterdir():  # temp files of a crashed run are never visible
            stale.unlink()
        self.workers = workers or max(2, os.cpu_count() or 2)
        self._limiter = anyio.CapacityLimiter(self.workers)
        self._manifests: dict[str, Manifest] = {}
        self._versions: dict[str, dict[str, int]] = {}  # package -> content id -> version
        self._refs: Counter[str] = Counter()
        self._pins: Counter[str] = Counter()
        self._busy_ids: set[str] = set()
        self._pkg_locks: dict[str, anyio.Lock] = {}
        for path in sorted(self._datalib.glob("*.json")):
            m = _manifest_decoder.decode(path.read_bytes())
            self._index(m)
            self._refs.update(m.hashes())
        for pkg in {m.package_id for m in self._manifests.values()}:
            want = self._pkg_entry(pkg)
            pkg_file = self._pkglib / f"{pkg}.json"
            if not pkg_file.exists() or _pkg_decoder.decode(pkg_file.read_bytes()) != want:
                _fs.atomic_write(pkg_file, msgspec.json.encode(want))

    # ----------------------------------------------------------------- queries

    def manifest(self, content_id: str) -> Manifest:
        try:
            return self._manifests[content_id]
        except KeyError:
            raise ContentNotFound(f"content {content_id!r} is not in {self.root}") from None

    def content_ids(self, package_id: str) -> list[str]:
        """Content versions of a package present in the library, oldest first."""
        return list(self._pkg_entry(package_id).content_ids)

    def has_file(self, sha256: str) -> bool:
        return self.file_path(sha256).exists()

    def file_path(self, sha256: str) -> Path:
        _paths.check_sha256(sha256)
        return self._filelib / sha256[:4] / sha256

    def references(self, sha256: str) -> int:
        """How many content versions reference a file."""
        return self._refs[sha256]

    async def read_stream(
        self, sha256: str, chunk_size: int = 1 << 20, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """A stored file, or ``length`` bytes of it from ``offset``, as chunks of chunk_size."""
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
        self, package_id: str, source: str | os.PathLike[str], content_id: str
    ) -> SnapshotReport:
        """Ingest a source folder as a new content version (see ``_fs.walk_source`` for its
        rule on symlinks and special files). Each file is hashed while it is copied in, in one
        worker thread per file; the manifest is written last."""
        _paths.check_package_id(package_id)
        version = _paths.content_version(content_id)
        if content_id in self._manifests:
            raise ContentLibError(f"content {content_id!r} already exists")
        src = Path(source)
        listing = await self._thread(lambda: list(_fs.walk_source(src)))
        previous = self._latest(package_id)
        known = {f.path: f for f in previous.files} if previous else {}
        entries: list[FileEntry] = []
        pinned: list[str] = []
        totals = {"read": 0, "stored": 0, "shared": 0}
        todo = iter(listing)

        async def worker() -> None:
            for rel, path, st in todo:
                sha, size, stored = await self._ingest_file(path, known.get(rel), pinned)
                entries.append(FileEntry(rel, size, sha, st.st_mode & 0o7777))
                totals["read"] += size
                totals["stored"] += size if stored else 0
                totals["shared"] += 0 if stored else 1

        with self._reserve(content_id):
            try:
                async with anyio.create_task_group() as tg:
                    for _ in range(min(self.workers, max(1, len(listing)))):
                        tg.start_soon(worker)
                # One syncfs for all new files and their folders, before the manifest exists.
                await self._thread(_fs.sync_filesystem, self._filelib)
                manifest = make_manifest(content_id, package_id, version, entries)
                await self._commit(manifest)
            finally:
                self._unpin(pinned)
        return SnapshotReport(manifest, totals["read"], totals["stored"], totals["shared"])

    async def _ingest_file(
        self, path: Path, before: FileEntry | None, pinned: list[str]
    ) -> tuple[str, int, bool]:
        if before is not None and self.has_file(before.sha256):
            # Probably unchanged since the last version: hash only, copy only if it changed.
            sha, size = await self._thread(_fs.hash_regular, path)
            if sha == before.sha256 and self._pin_if_present(sha, pinned):
                return sha, size, False
        tmp = _fs.temp_name(self._tmp)
        sha, size = await self._thread(lambda: _fs.copy_hashing(path, tmp, fsync=False))
        return sha, size, self._place(sha, tmp, pinned)

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
        """Pin sha and move a verified temp file into FileLib; False if it was already there."""
        if pinned is not None:
            self._pins[sha] += 1
            pinned.append(sha)
        final = self.file_path(sha)
        if final.exists() and not replace:
            tmp.unlink()
            return False
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)
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
    ) -> None:
        """Store a staged file after checking its size and hash.

        ``move``: take the staged file itself (renamed into the library's private tmp/ first,
        then hashed there, so nobody can change it between check and use; copied when it is
        on another filesystem). ``replace``: overwrite a stored copy (a redistribute repairs
        a damaged file)."""
        _paths.check_sha256(sha256)
        tmp = _fs.temp_name(self._tmp)

        def take() -> tuple[str, int]:
            if move:
                try:
                    _fs.check_regular(Path(path))
                    os.replace(path, tmp)
                    os.chmod(tmp, 0o644)
                    return _fs.hash_file(tmp)
                except OSError as e:
                    if e.errno != errno.EXDEV:
                        raise
            return _fs.copy_hashing(Path(path), tmp)

        def store() -> None:
            # One worker-thread hop: take, check, make durable, place, sync the folder.
            try:
                got_sha, got_size = take()
                _check(sha256, size, got_sha, got_size)
                if move:
                    _fs.fsync_file(tmp)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self._place(sha256, tmp, None, replace=replace)
            _fs.fsync_dir(self.file_path(sha256).parent)

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
        path = self._datalib / f"{manifest.content_id}.json"
        data = msgspec.json.encode(manifest)
        pkg = manifest.package_id
        async with self._pkg_lock(pkg):
            versions = {**self._versions.get(pkg, {}), manifest.content_id: manifest.version}
            entry = PkgEntry(pkg, tuple(sorted(versions, key=versions.__getitem__)))

            def write() -> None:  # one worker-thread hop for DataLib and PkgLib
                _fs.atomic_write(path, data)
                _fs.atomic_write(self._pkglib_path(pkg), msgspec.json.encode(entry), durable=False)

            await self._thread(write)
            self._index(manifest)
        self._refs.update(manifest.hashes())

    # ----------------------------------------------------------------- removal, checks

    async def remove_content(self, content_id: str) -> None:
        """Remove a version; files go only when no manifest references them (nor an ingest)."""
        manifest = self.manifest(content_id)
        with self._reserve(content_id):
            await self._thread(self._remove_manifest_file, content_id)
            del self._manifests[content_id]
            versions = self._versions[manifest.package_id]
            del versions[content_id]
            if not versions:
                del self._versions[manifest.package_id]
            self._refs.subtract(manifest.hashes())
            doomed = []
            for sha in manifest.hashes():
                if self._refs[sha] <= 0:
                    del self._refs[sha]
                    if not self._pins[sha]:
                        doomed.append(sha)
            # Unlinked in the loop, without an await, so no ingest can pin one mid-way.
            for sha in doomed:
                self.file_path(sha).unlink(missing_ok=True)
                self._sig_path(sha).unlink(missing_ok=True)
            await self._write_pkglib(manifest.package_id)

    def _remove_manifest_file(self, content_id: str) -> None:
        (self._datalib / f"{content_id}.json").unlink()
        _fs.fsync_dir(self._datalib)

    async def collect_garbage(self) -> int:
        """Delete FileLib files no manifest references and no ingest pins; returns the count."""
        present = await self._thread(lambda: [p.name for p in self._filelib.glob("*/*")])
        removed = 0
        for name in present:
            if len(name) == 64 and not self._refs[name] and not self._pins[name]:
                self.file_path(name).unlink(missing_ok=True)
                self._sig_path(name).unlink(missing_ok=True)
                removed += 1
        return removed

    async def verify(self, content_id: str) -> VerifyReport:
        """Content validation: rehash every file; report missing and corrupt paths."""
        manifest = self.manifest(content_id)
        state: dict[str, str] = {}

        async def check(sha: str) -> None:
            path = self.file_path(sha)
            try:
                got, _ = await self._thread(_fs.hash_file, path)
            except FileNotFoundError:
                state[sha] = "missing"
                return
            state[sha] = "ok" if got == sha else "corrupt"

        await self._each(sorted(manifest.hashes()), check)
        missing = tuple(f.path for f in manifest.files if state[f.sha256] == "missing")
        corrupt = tuple(f.path for f in manifest.files if state[f.sha256] == "corrupt")
        return VerifyReport(content_id, missing, corrupt)

    async def extract(self, content_id: str, out_dir: str | os.PathLike[str]) -> None:
        """Rebuild the source folder of a version (modes too) under out_dir."""
        manifest = self.manifest(content_id)
        out = Path(out_dir)
        await self._thread(lambda: out.mkdir(parents=True, exist_ok=True))

        async def one(entry: FileEntry) -> None:
            src = self.file_path(entry.sha256)
            if not src.exists():
                raise ContentNotFound(f"{content_id}: file {entry.path!r} ({entry.sha256}) missing")
            target = _paths.target_in(out, entry.path)
            await self._thread(_extract_file, src, target, entry.mode)

        await self._each(manifest.files, one)

    # ----------------------------------------------------------------- signatures

    def _sig_path(self, sha256: str) -> Path:
        return self._siglib / sha256[:4] / f"{sha256}.sig"

    async def signature(self, sha256: str) -> FileSignature:
        """The FastCDC chunk signature of a stored file (computed once, then cached)."""
        from contentlib import _signature

        path = self.file_path(sha256)
        sig_path = self._sig_path(sha256)
        try:
            return _sig_decoder.decode(await self._thread(sig_path.read_bytes))
        except (FileNotFoundError, msgspec.DecodeError):
            pass
        if not path.exists():
            raise ContentNotFound(f"file {sha256} is not in {self.root}")
        sig = await self._thread(_signature.compute, path, sha256)

        def save() -> None:
            sig_path.parent.mkdir(exist_ok=True)
            _fs.atomic_write(sig_path, msgspec.msgpack.encode(sig))

        await self._thread(save)
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
        self._place(new_sha256, tmp, None)
        await self._thread(_fs.fsync_dir, self.file_path(new_sha256).parent)
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
            await self._thread(shutil.rmtree, stage, True)

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
                touched = {self.file_path(sha).parent for sha in staged}
                for sha, tmp in staged.items():
                    self._place(sha, tmp, pinned)
                await self._thread(_fs.fsync_dirs, touched)
                await self._commit(manifest)
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
        versions = self._versions.get(package_id, {})
        return PkgEntry(package_id, tuple(sorted(versions, key=versions.__getitem__)))

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

        async with anyio.create_task_group() as tg:
            for _ in range(self.workers):
                tg.start_soon(worker)


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


def _write_with(path: Path, encode: Callable[..., None], *args: Any) -> None:
    with open(path, "xb") as out:
        encode(*args, out)


def _extract_file(src: Path, target: Path, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fs.temp_name(target.parent)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)  # replaces a link at target itself, never follows it
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
