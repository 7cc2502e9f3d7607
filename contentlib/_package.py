"""PCK and DLT package files: tar streams compressed with zstd, written and read in one pass.

Layout (``tar --zstd -tf`` lists it): ``manifest.json`` (PCK) or ``delta.json`` (DLT)
first, then ``files/<SHA256>`` for whole files and ``deltas/<SHA256>`` for deltas. Reading
stages every file in a private folder and checks size and hash; the caller moves them into
the library only when the whole package file has been read and verified.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import msgspec
import zstandard as zstd

from contentlib import _delta, _fs, _paths
from contentlib._errors import ContentNotFound, CorruptPackageFile, HashMismatch, UnsafePath
from contentlib._model import DeltaManifest, Manifest

PCK_MANIFEST = "manifest.json"
DLT_MANIFEST = "delta.json"
_MAX_MANIFEST = 256 << 20
_MEMBER = re.compile(r"(files|deltas)/([0-9A-F]{64})")
_BUF = 1 << 20


@contextmanager
def _tar_writer(out_path: Path, level: int) -> Iterator[tarfile.TarFile]:
    """A tar stream into zstd into a temp file renamed over out_path once complete."""
    tmp = _fs.temp_name(out_path.parent)
    try:
        with open(tmp, "wb") as raw:
            cctx = zstd.ZstdCompressor(level=level, threads=-1)
            with (
                cctx.stream_writer(raw, closefd=False, write_size=_BUF) as zw,
                tarfile.open(
                    fileobj=zw,
                    mode="w|",
                    format=tarfile.PAX_FORMAT,
                    bufsize=_BUF,
                ) as tar,
            ):
                yield tar
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    with open(path, "rb", buffering=_BUF) as f:
        tar.addfile(info, f)


def write_pck(manifest: Manifest, file_path: Callable[[str], Path], out_path: Path) -> None:
    with _tar_writer(out_path, level=3) as tar:
        _add_bytes(tar, PCK_MANIFEST, msgspec.json.encode(manifest))
        sizes = {f.sha256: f.size for f in manifest.files}
        for sha in sorted(sizes):
            _add_file(tar, f"files/{sha}", file_path(sha), sizes[sha])


def write_dlt(
    delta: DeltaManifest, file_path: Callable[[str], Path], deltas: dict[str, Path], out: Path
) -> None:
    raw = sum(p.size for p in delta.payloads)
    with _tar_writer(out, level=19 if raw <= (16 << 20) else 9) as tar:
        _add_bytes(tar, DLT_MANIFEST, msgspec.json.encode(delta))
        for p in delta.payloads:
            if p.base_sha256:
                d = deltas[p.sha256]
                _add_file(tar, f"deltas/{p.sha256}", d, d.stat().st_size)
            else:
                _add_file(tar, f"files/{p.sha256}", file_path(p.sha256), p.size)


def read_package(
    path: Path,
    stage: Path,
    base_file: Callable[[DeltaManifest, str], Path],
    resolve: Callable[[DeltaManifest], Manifest],
) -> tuple[Manifest, dict[str, Path], DeltaManifest | None]:
    """Read a PCK or DLT into stage/; every error leaves only files under stage/.

    For a DLT, ``resolve`` checks the base and returns the new version's manifest, and
    ``base_file(delta, sha)`` gives the stored base file a delta applies to.
    """
    try:
        with (
            open(path, "rb") as raw,
            zstd.ZstdDecompressor().stream_reader(raw, read_size=_BUF) as zr,
            tarfile.open(fileobj=zr, mode="r|", bufsize=_BUF) as tar,
        ):
            return _read_members(path, tar, stage, base_file, resolve)
    except FileNotFoundError as e:
        raise ContentNotFound(f"package file {path} not found") from e
    except (tarfile.TarError, zstd.ZstdError, EOFError) as e:
        raise CorruptPackageFile(f"{path}: truncated or malformed ({e})") from e


def _read_members(
    path: Path,
    tar: tarfile.TarFile,
    stage: Path,
    base_file: Callable[[DeltaManifest, str], Path],
    resolve: Callable[[DeltaManifest], Manifest],
) -> tuple[Manifest, dict[str, Path], DeltaManifest | None]:
    first = tar.next()
    if first is None or first.name not in (PCK_MANIFEST, DLT_MANIFEST):
        raise CorruptPackageFile(f"{path}: does not start with {PCK_MANIFEST} or {DLT_MANIFEST}")
    delta: DeltaManifest | None = None
    data = _member_bytes(path, tar, first)
    try:
        if first.name == PCK_MANIFEST:
            manifest = msgspec.json.decode(data, type=Manifest)
            _paths.check_manifest(manifest)
            expect = {f.sha256: (f.size, "") for f in manifest.files}
        else:
            delta = msgspec.json.decode(data, type=DeltaManifest)
            manifest = _paths.check_manifest(resolve(delta))
            expect = {p.sha256: (p.size, p.base_sha256) for p in delta.payloads}
    except msgspec.ValidationError as e:
        raise CorruptPackageFile(f"{path}: bad {first.name} ({e})") from e
    except msgspec.DecodeError as e:
        raise CorruptPackageFile(f"{path}: bad {first.name} ({e})") from e
    staged: dict[str, Path] = {}
    while (member := tar.next()) is not None:
        _paths.check_relpath(member.name)  # `../x`, `/x` and the like: UnsafePath
        if not member.isreg():
            raise UnsafePath(f"{path}: entry {member.name!r} is not a regular file")
        m = _MEMBER.fullmatch(member.name)
        if m is None or m.group(2) not in expect or m.group(2) in staged:
            raise CorruptPackageFile(f"{path}: unexpected entry {member.name!r}")
        sha = m.group(2)
        size, base = expect[sha]
        if (m.group(1) == "deltas") != bool(base):
            raise CorruptPackageFile(f"{path}: entry {member.name!r} has the wrong kind")
        src = tar.extractfile(member)
        if src is None:
            raise CorruptPackageFile(f"{path}: entry {member.name!r} has no data")
        target = _fs.temp_name(stage)
        writer = _fs.HashingWriter(target)
        staged[sha] = target
        try:
            if base:
                assert delta is not None
                _delta.apply(base_file(delta, base), src, writer, size)
            else:
                if member.size != size:
                    raise CorruptPackageFile(f"{path}: {member.name} is not {size} bytes")
                while chunk := src.read(_BUF):
                    writer.write(chunk)
            writer.finish(sync=False)  # the version's commit syncs it with the others
        finally:
            writer.close()
        if writer.size != size or writer.sha256() != sha:
            raise HashMismatch(f"{path}: {member.name} does not match its size and SHA-256")
    if missing := sorted(set(expect) - set(staged)):
        raise CorruptPackageFile(f"{path}: truncated, {len(missing)} file(s) missing")
    return manifest, staged, delta


def _member_bytes(path: Path, tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if not member.isreg() or member.size > _MAX_MANIFEST:
        raise CorruptPackageFile(f"{path}: {member.name} is not a plausible manifest")
    f: IO[bytes] | None = tar.extractfile(member)
    if f is None:
        raise CorruptPackageFile(f"{path}: {member.name} has no data")
    data = f.read()
    if len(data) != member.size:
        raise CorruptPackageFile(f"{path}: {member.name} is truncated")
    return data
