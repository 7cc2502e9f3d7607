"""Validation of every name that becomes a path: ids, manifest paths, tar entry names."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath

from contentlib._errors import UnsafePath
from contentlib._model import Manifest, content_hash

_ID = re.compile(r"[A-Za-z0-9_\-]{1,128}")
_CONTENT_ID = re.compile(r"([A-Za-z0-9_\-]{1,128})\.([0-9]{1,9})")
_SHA = re.compile(r"[0-9A-F]{64}")


def check_package_id(package_id: str) -> str:
    if not _ID.fullmatch(package_id):
        raise UnsafePath(f"invalid package id {package_id!r}")
    return package_id


def content_id(package_id: str, version: int) -> str:
    """``<PkgID>.<version>``: the id of one content version of a package."""
    if version < 1:
        raise UnsafePath(f"invalid version {version!r} of {package_id!r} (versions start at 1)")
    return f"{check_package_id(package_id)}.{version}"


def parse_content_id(content_id: str) -> tuple[str, int]:
    """(package id, version) of ``<id>.<version>``; refuses anything that is not one."""
    m = _CONTENT_ID.fullmatch(content_id)
    if not m:
        raise UnsafePath(f"invalid content id {content_id!r} (want <id>.<version>)")
    return m.group(1), int(m.group(2))


def content_version(content_id: str) -> int:
    """The version number of ``<id>.<version>``; refuses anything that is not a plain name."""
    m = _CONTENT_ID.fullmatch(content_id)
    if not m:
        raise UnsafePath(f"invalid content id {content_id!r} (want <id>.<version>)")
    return int(m.group(2))


def is_sha256(name: str) -> bool:
    return _SHA.fullmatch(name) is not None


def check_sha256(sha256: str) -> str:
    if not is_sha256(sha256):
        raise UnsafePath(f"invalid SHA-256 {sha256!r} (want 64 uppercase hex digits)")
    return sha256


def check_relpath(path: str) -> str:
    """A manifest path: relative posix UTF-8, no empty, ``.`` or ``..`` parts, no NUL or
    backslash."""
    if not path or "\0" in path or "\\" in path or path.startswith("/"):
        raise UnsafePath(f"unsafe path {path!r}")
    if not path.isascii():
        try:
            path.encode()
        except UnicodeEncodeError:  # a lone surrogate: a file name that was not UTF-8
            raise UnsafePath(f"path {path!r} is not valid UTF-8") from None
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"unsafe path {path!r}")
    return path


def target_in(root: Path, relpath: str) -> Path:
    """``root/relpath`` after checking relpath and that no existing parent is a symlink."""
    check_relpath(relpath)
    target = root.joinpath(*PurePosixPath(relpath).parts)
    parent = root
    for part in PurePosixPath(relpath).parts[:-1]:
        parent = parent / part
        try:
            st = os.lstat(parent)
        except FileNotFoundError:
            break
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"{relpath!r}: {parent} exists and is not a directory")
    return target


def check_manifest(m: Manifest) -> Manifest:
    """Refuse a manifest whose ids, paths, hashes or content hash are not what they claim."""
    check_package_id(m.package_id)
    if content_version(m.content_id) != m.version:
        raise UnsafePath(f"manifest {m.content_id!r} claims version {m.version}")
    seen: set[str] = set()
    for f in m.files:
        check_relpath(f.path)
        check_sha256(f.sha256)
        if f.size < 0 or not 0 <= f.mode <= 0o7777:
            raise UnsafePath(f"manifest {m.content_id!r}: bad size or mode for {f.path!r}")
        if f.path in seen:
            raise UnsafePath(f"manifest {m.content_id!r}: duplicate path {f.path!r}")
        seen.add(f.path)
    for f in m.files:  # a file may not also be a folder of another file
        parts = f.path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in seen:
                raise UnsafePath(f"manifest {m.content_id!r}: {f.path!r} is under a file")
    for d in m.dirs:  # an empty folder: a safe path, once, neither a file nor under one
        check_relpath(d)
        parts = d.split("/")
        if d in seen or any("/".join(parts[:i]) in seen for i in range(1, len(parts))):
            raise UnsafePath(f"manifest {m.content_id!r}: folder {d!r} is a file or under one")
    if len(set(m.dirs)) != len(m.dirs):
        raise UnsafePath(f"manifest {m.content_id!r}: a folder is listed twice")
    if content_hash(m.files, m.dirs) != m.content_hash:
        raise UnsafePath(f"manifest {m.content_id!r}: content hash does not match its files")
    return m
