"""Opening a library: every manifest checked, the damaged quarantined, crash leftovers cleared.

One blocking pass over the disk: ``ContentLibrary.open`` runs it in a worker thread. Only
DataLib is trusted; PkgLib is rewritten to match it. After a clean close the pass reads the
index that close wrote (``_index``) and checks only what changed on disk since.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import msgspec

from contentlib import _fs, _index, _paths
from contentlib._errors import ContentLibError, UnsafePath
from contentlib._model import DamagedManifest, Manifest, PkgEntry

_INDEX = "reasons.json"  # in DataLib/quarantine: why each file there was moved
_manifest_decoder = msgspec.json.Decoder(Manifest)


class _Record(msgspec.Struct, frozen=True):
    name: str  # the file name it had in DataLib
    reason: str


_index_decoder = msgspec.json.Decoder(dict[str, _Record])


class Layout(NamedTuple):
    root: Path
    filelib: Path
    datalib: Path
    pkglib: Path
    siglib: Path
    tmp: Path

    @classmethod
    def of(cls, root: Path) -> Layout:
        return cls(root, *(root / d for d in ("FileLib", "DataLib", "PkgLib", "SigLib", "tmp")))

    @property
    def quarantine(self) -> Path:
        return self.datalib / "quarantine"


class Opened(NamedTuple):
    manifests: dict[str, Manifest]
    versions: dict[str, dict[str, int]]  # package -> content id -> version
    damaged: tuple[DamagedManifest, ...]
    refs: Counter[str]  # file hash -> how many manifests name it
    garbage_free: bool  # known to hold no FileLib file outside every manifest
    taken: _index.Taken | None  # the index of the last clean close, if it still holds


def recover(layout: Layout) -> Opened:
    """Create the folders, clear temp files, check every manifest, quarantine the damaged
    ones and rewrite PkgLib to match what is left.

    After a clean close (``_index``), the manifests whose DataLib files are as the close
    left them come from the index; only the others are read and checked, and only their
    packages' PkgLib entries are rewritten. Otherwise every manifest is read."""
    for d in layout:
        d.mkdir(parents=True, exist_ok=True)
    taken = _index.take(layout.root)
    touched: set[str] | None = None  # packages whose PkgLib entry may be stale (None: all)
    if taken is None:
        _clear_temp(layout)
        manifests, bad = _load_all(layout.datalib, _json_names(layout.datalib))
        garbage_free = False
    else:
        _clear_tmp_folder(layout.tmp)
        manifests, bad, garbage_free, touched = _from_index(layout.datalib, taken)
    _quarantine(layout.quarantine, bad)
    versions: dict[str, dict[str, int]] = {}
    refs: Counter[str] = Counter()
    for m in manifests.values():
        versions.setdefault(m.package_id, {})[m.content_id] = m.version
        refs.update(m.hashes())
    _sync_pkglib(layout.pkglib, versions, touched)
    # One whose content id was added again since (a redistribute) is resolved.
    damaged = tuple(d for d in _quarantined(layout.quarantine) if d.content_id not in manifests)
    unchanged = taken is not None and garbage_free == taken.garbage_free and not touched
    return Opened(manifests, versions, damaged, refs, garbage_free, taken if unchanged else None)


def _load_all(
    datalib: Path, names: Iterable[str]
) -> tuple[dict[str, Manifest], list[tuple[Path, str]]]:
    """Read and check each named manifest: those that pass, and the damaged with why."""
    manifests: dict[str, Manifest] = {}
    bad: list[tuple[Path, str]] = []
    folder = f"{datalib}{os.sep}"
    for name in names:
        try:
            m = _load(folder + name, name)
        except msgspec.DecodeError as e:
            bad.append((datalib / name, f"does not decode ({e})"))
        except ContentLibError as e:
            bad.append((datalib / name, str(e)))
        else:
            manifests[m.content_id] = m
    return manifests, bad


def _from_index(
    datalib: Path, taken: _index.Taken
) -> tuple[dict[str, Manifest], list[tuple[Path, str]], bool, set[str]]:
    """Manifests from the index where DataLib's file still has its stamp, the rest read
    and checked; whether the library is still garbage free (no indexed manifest gone or
    changed); the packages whose manifests differ from the index."""
    listing: dict[str, _index.Stamp] = {}
    with os.scandir(datalib) as it:
        for e in it:
            if e.name[0] == ".":
                if _fs.is_temp_name(e.name):  # an atomic write a kill interrupted
                    os.unlink(e.path)
            elif e.name.endswith(".json"):
                listing[e.name] = _index.stamp(e.stat(follow_symlinks=False))
    manifests: dict[str, Manifest] = {}
    indexed: dict[str, Manifest] = {}  # read again: what the index held
    garbage_free = taken.garbage_free
    touched: set[str] = set()
    for m, stamp in _index.entries(taken):
        name = f"{m.content_id}.json"
        now = listing.pop(name, None)
        if now is None:  # deleted while closed: its files may be garbage now
            garbage_free = False
            touched.add(m.package_id)
        elif stamp is not None and stamp == now:
            manifests[m.content_id] = m
        else:
            indexed[name] = m
    loaded, bad = _load_all(datalib, sorted([*listing, *indexed]))
    for m in loaded.values():
        before = indexed.get(f"{m.content_id}.json")
        if before is None or before.content_hash != m.content_hash:
            touched.add(m.package_id)
            garbage_free = garbage_free and before is None
    for path, _ in bad:
        before = indexed.get(path.name)
        if before is not None:
            garbage_free = False
            touched.add(before.package_id)
    manifests.update(loaded)
    return manifests, bad, garbage_free, touched


class LibraryState(NamedTuple):
    """What a library on disk holds, read without changing anything."""

    manifests: dict[str, Manifest]  # content id -> manifest that passed every check
    damaged: tuple[DamagedManifest, ...]  # failing DataLib files and the quarantine


def inspect_library(root: str | os.PathLike[str]) -> LibraryState:
    """Read a library's manifests as :meth:`ContentLibrary.open` would judge them, but
    read-only (no temp files cleared, nothing quarantined): for a library another process
    may have open, and for checks that must not change what they check."""
    layout = Layout.of(Path(root))
    manifests: dict[str, Manifest] = {}
    damaged: list[DamagedManifest] = []
    paths = sorted(layout.datalib.glob("*.json")) if layout.datalib.is_dir() else []
    for path in paths:
        try:
            m = load_manifest(path)
        except msgspec.DecodeError as e:
            damaged.append(DamagedManifest(path.name, str(path), f"does not decode ({e})"))
        except (ContentLibError, OSError) as e:
            damaged.append(DamagedManifest(path.name, str(path), str(e)))
        else:
            manifests[m.content_id] = m
    quarantined = (d for d in _quarantined(layout.quarantine) if d.content_id not in manifests)
    return LibraryState(manifests, (*damaged, *quarantined))


def _json_names(folder: Path) -> list[str]:
    """The names of the ``*.json`` files of a folder, sorted (strings, not Path objects: a
    library holds tens of thousands)."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.name.endswith(".json") and e.name[0] != ".")


def load_manifest(path: Path) -> Manifest:
    """A DataLib manifest that decodes, passes ``check_manifest`` (ids, paths, and a content
    hash recomputed from its entries) and is named after its content id."""
    return _load(str(path), path.name)


def _load(path: str, name: str) -> Manifest:
    m = _manifest_decoder.decode(_fs.read_regular(path))
    if name != f"{m.content_id}.json":
        raise UnsafePath(f"the file name is not its content id {m.content_id!r}")
    return _paths.check_manifest(m)


def _clear_temp(layout: Layout) -> None:
    """What a killed run left: all of tmp/ (files and staging folders) and the temp files
    of atomic writes beside their targets. The library is opened by one process at a time."""
    _clear_tmp_folder(layout.tmp)
    sig_folders = [d for d in layout.siglib.iterdir() if d.is_dir()]
    for folder in (layout.datalib, layout.quarantine, layout.pkglib, layout.siglib, *sig_folders):
        for path in folder.glob(".*.tmp"):
            if _fs.is_temp_name(path.name):
                path.unlink()


def _clear_tmp_folder(tmp: Path) -> None:
    """Everything in tmp/: files and staging folders (after a clean close: nothing)."""
    for entry in tmp.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _quarantine(folder: Path, bad: list[tuple[Path, str]]) -> None:
    """Move each damaged manifest aside, bytes kept, and record why.

    Not synced: after a crash the move is redone, or the file is listed without a reason."""
    if not bad:
        return
    folder.mkdir(exist_ok=True)
    index = _read_index(folder)
    moves = []
    for path, reason in bad:
        target = folder / path.name
        if target.name == _INDEX or target.name in index or os.path.lexists(target):
            target = folder / f"{path.name}.{uuid.uuid4().hex[:8]}"
        index[target.name] = _Record(path.name, reason)
        moves.append((path, target))
    _fs.atomic_write(folder / _INDEX, msgspec.json.encode(index), durable=False)
    for path, target in moves:
        os.replace(path, target)


def _quarantined(folder: Path) -> tuple[DamagedManifest, ...]:
    """Everything in the quarantine, from this open or an earlier one."""
    if not folder.is_dir():
        return ()
    index = _read_index(folder)
    unknown = "quarantined on an earlier open (no reason recorded)"
    found = []
    for path in sorted(folder.iterdir()):
        if path.name != _INDEX and not _fs.is_temp_name(path.name):
            rec = index.get(path.name, _Record(path.name, unknown))
            found.append(DamagedManifest(rec.name, str(path), rec.reason))
    return tuple(found)


def _read_index(folder: Path) -> dict[str, _Record]:
    try:
        return _index_decoder.decode((folder / _INDEX).read_bytes())
    except (FileNotFoundError, msgspec.DecodeError):
        return {}


def _sync_pkglib(
    pkglib: Path, versions: dict[str, dict[str, int]], touched: set[str] | None
) -> None:
    """A kill can leave PkgLib listing a version whose manifest is gone, or a package with
    none left: rewrite or delete every file that does not match DataLib. ``touched``: only
    those packages' files (after a clean close the others match)."""
    if touched is None:
        for name in _json_names(pkglib):
            if name[:-5] not in versions:
                (pkglib / name).unlink()
        todo: Iterable[str] = versions
    else:
        for pkg in touched - versions.keys():
            (pkglib / f"{pkg}.json").unlink(missing_ok=True)
        todo = touched & versions.keys()
    folder = f"{pkglib}{os.sep}"
    for pkg in todo:
        by_id = versions[pkg]
        data = msgspec.json.encode(PkgEntry.of(pkg, by_id))
        if _fs.read_if_exists(f"{folder}{pkg}.json") != data:
            path = pkglib / f"{pkg}.json"
            # Not synced: rebuilt from DataLib on every open.
            _fs.atomic_write(path, data, durable=False)
