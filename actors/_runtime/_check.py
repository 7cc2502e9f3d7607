"""``cmdist check``: a data root's site databases against its content libraries, read-only.

Like ``restic check``: nothing is written, nothing is repaired, every problem is named. For
each site database under the root:

- the file opens read-only, ``PRAGMA integrity_check`` is ok and its schema version is one
  this code knows;
- every DP whose PkgStatus Type 2 row says Installed holds the package's stored version
  (unless work for it is still pending: a job, an action);
- every manifest of the site's library and of its standard DPs' libraries decodes, passes
  the content library's own checks (ids, paths, a content hash recomputed from its
  entries), and every file it names is in FileLib with the SHA-256 it claims;
- nothing is orphaned: no FileLib file without a manifest, no content on a DP for a package
  the site does not know or no longer targets there, no job, status or DP row without its
  package.

Libraries are read as files (DataLib manifests, FileLib files), never opened as a
:class:`~contentlib.ContentLibrary`: that would clean temp folders and quarantine manifests
under a run that may still be going.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, NamedTuple

import anyio.to_thread
import msgspec

from actors._runtime._read_status import site_databases
from actors.config import HierarchyConfig, Site
from actors.dp import content_library, dp_root
from actors.errors import SiteDatabaseError
from actors.sitedb import SiteDatabase
from contentlib import ContentLibError, Manifest, content_id, hash_file, load_manifest

__all__ = ["CheckReport", "Checked", "Problem", "ProblemKind", "check_root", "report_lines"]

ProblemKind = Literal[
    "database",  # the site database cannot be opened (damaged, not a database, schema)
    "integrity",  # PRAGMA integrity_check found damage
    "not installed",  # PkgStatus says Installed, the DP does not hold the stored version
    "damaged manifest",  # a DataLib manifest that does not decode or check
    "quarantined manifest",  # set aside by the library on open: a human repairs or drops it
    "missing file",  # a manifest names a file FileLib does not have
    "corrupt file",  # a FileLib file whose bytes do not hash to its name
    "orphan file",  # a FileLib file no manifest references
    "orphan content",  # DP content of a package the site does not know or target there
    "orphan row",  # a job, status or DP row without its package (or DP)
]


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong: where (a site database, a site library, a DP), what, and the
    package, file or row with the detail."""

    where: str
    what: ProblemKind
    detail: str

    def line(self) -> str:
        return f"{self.where}: {self.what}: {self.detail}"


class Checked(msgspec.Struct, frozen=True):
    """What was looked at: a clean report over nothing is no evidence."""

    databases: int = 0
    packages: int = 0
    installed: int = 0  # PkgStatus Installed rows checked against a DP library
    libraries: int = 0
    manifests: int = 0
    files: int = 0  # distinct FileLib files hash-verified
    bytes: int = 0  # bytes hashed

    def __add__(self, other: Checked) -> Checked:
        return Checked(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


class CheckReport(msgspec.Struct, frozen=True):
    ok: bool
    problems: tuple[Problem, ...]
    checked: Checked


def _values(c: Checked) -> tuple[int, ...]:
    return tuple(getattr(c, f) for f in c.__struct_fields__)


# -- the whole root ----------------------------------------------------------------------


async def check_root(config: HierarchyConfig) -> CheckReport:
    """Check every site database under ``config``'s data root and the libraries of its
    site server and standard DPs. Raises
    :class:`~actors._cli_status.DataRootError` when the root holds no site database."""
    problems = list(_lost_databases(config))
    checked = Checked()
    for site, path in site_databases(config):
        found, counts = await _check_site(config, site, path)
        problems += found
        checked += counts
    return CheckReport(ok=not problems, problems=tuple(problems), checked=checked)


def _lost_databases(config: HierarchyConfig) -> Iterator[Problem]:
    """A site whose library holds content but whose database is gone: the site would
    refuse to start (``SiteDatabaseLost``)."""
    for site in config.sites:
        root = config.server_root(site.server)
        if not (root / "site.db").exists() and any(
            (content_library(root) / "DataLib").glob("*.json")
        ):
            yield Problem(
                f"{site.code} site database {root / 'site.db'}",
                "database",
                f"missing, while the library of {site.server} holds content",
            )


async def _check_site(
    config: HierarchyConfig, site: Site, path: Path
) -> tuple[list[Problem], Checked]:
    where = f"{site.code} site database {path}"
    try:
        async with SiteDatabase.open(path, read_only=True) as db:
            return await _SiteCheck(config, site, db, where).run()
    except SiteDatabaseError as e:
        return [Problem(where, "database", e.problem)], Checked(databases=1)


# -- one library, read as files ----------------------------------------------------------


class _Library(NamedTuple):
    """What one SCCMContentLib holds, checked."""

    where: str
    manifests: dict[str, Manifest]  # content id -> manifest, the ones that check
    problems: list[Problem]
    checked: Checked


def _scan_library(where: str, root: Path) -> _Library:
    """Manifests decoded and checked, every file they name hashed, orphans found. Blocking:
    run it in a worker thread."""
    lib = _Library(where, {}, [], Checked())
    if not root.is_dir():
        return lib
    datalib = root / "DataLib"
    for path in sorted(datalib.glob("*.json")):
        try:
            m = load_manifest(path)
        except msgspec.DecodeError as e:
            lib.problems.append(Problem(where, "damaged manifest", f"{path}: does not decode: {e}"))
        except (ContentLibError, OSError) as e:
            lib.problems.append(Problem(where, "damaged manifest", f"{path}: {e}"))
        else:
            lib.manifests[m.content_id] = m
    quarantined = _quarantined(datalib / "quarantine")
    lib.problems.extend(
        Problem(where, "quarantined manifest", f"{p}: set aside on open; repair or delete it")
        for p in quarantined
    )
    files, hashed = _check_files(where, root / "FileLib", lib.manifests.values(), lib.problems)
    # While a manifest is damaged, which files it referenced cannot be known: no orphans.
    if not any(p.what in ("damaged manifest", "quarantined manifest") for p in lib.problems):
        lib.problems.extend(_orphan_files(where, root / "FileLib", lib.manifests.values()))
    return lib._replace(
        checked=Checked(libraries=1, manifests=len(lib.manifests), files=files, bytes=hashed)
    )


def _quarantined(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name != "reasons.json")


def _check_files(
    where: str, filelib: Path, manifests: Iterable[Manifest], problems: list[Problem]
) -> tuple[int, int]:
    """Each distinct file once: present and hashing to its name. Returns (files, bytes)."""
    users: dict[str, list[str]] = {}
    for m in manifests:
        for f in m.files:
            users.setdefault(f.sha256, []).append(f"{m.content_id} {f.path!r}")
    hashed = 0
    for sha, named in sorted(users.items()):
        path = _file_path(filelib, sha)
        uses = ", ".join(named[:3]) + (" ..." if len(named) > 3 else "")
        try:
            got, size = hash_file(path)
        except FileNotFoundError:
            problems.append(Problem(where, "missing file", f"{path} ({uses}) is not in FileLib"))
            continue
        except OSError as e:
            problems.append(Problem(where, "corrupt file", f"{path} ({uses}): unreadable: {e}"))
            continue
        hashed += size
        if got != sha:
            problems.append(
                Problem(
                    where, "corrupt file", f"{path} ({uses}): its bytes hash to {got}, not its name"
                )
            )
    return len(users), hashed


def _orphan_files(where: str, filelib: Path, manifests: Iterable[Manifest]) -> Iterator[Problem]:
    referenced = {sha for m in manifests for sha in m.hashes()}
    if not filelib.is_dir():
        return
    for path in sorted(filelib.glob("*/*")):
        if path.name not in referenced:
            yield Problem(where, "orphan file", f"{path}: no manifest references it")


def _file_path(filelib: Path, sha: str) -> Path:
    return filelib / sha[:4] / sha


# -- one site: its database against its libraries ----------------------------------------


class _DP(NamedTuple):
    name: str
    nal_path: str
    root: Path  # its SCCMContentLib


class _SiteCheck:
    def __init__(self, config: HierarchyConfig, site: Site, db: SiteDatabase, where: str) -> None:
        self.config = config
        self.site = site
        self.db = db
        self.where = where
        self.problems: list[Problem] = []

    async def run(self) -> tuple[list[Problem], Checked]:
        await self._integrity()
        rows = await self.db.packages()
        packages = {p.pkg_id: p.stored_pkg_version for p in rows}
        own = sum(1 for p in rows if p.source_site == self.site.code)  # DRS copies the others
        site_lib = await _scan(
            f"{self.site.server} site library",
            content_library(self.config.server_root(self.site.server)),
        )
        dp_libs = {dp.nal_path: (dp, await _scan(dp.name, dp.root)) for dp in await self._dps()}
        libraries = [site_lib, *(lib for _, lib in dp_libs.values())]
        for lib in libraries:
            self.problems += lib.problems
        installed = await self._installed(packages, {nal: lib for nal, (_, lib) in dp_libs.items()})
        await self._orphan_rows()
        self._unknown_site_content(site_lib, packages)
        await self._orphan_dp_content(packages, dp_libs)
        counts = sum((lib.checked for lib in libraries), Checked())
        return self.problems, counts + Checked(databases=1, packages=own, installed=installed)

    async def _integrity(self) -> None:
        found = await self.db.integrity_check()
        if found != ["ok"]:
            self.problems += [Problem(self.where, "integrity", r) for r in found[:20]]

    async def _dps(self) -> list[_DP]:
        """The site's DPs, standard and pull (the database's rows: a DP dropped from the
        file still holds what it held)."""
        return [
            _DP(
                dp.server_name,
                dp.nal_path,
                content_library(dp_root(self.config, dp.server_name, dp.is_site_server)),
            )
            for dp in await self.db.distribution_points(self.site.code)
        ]

    async def _installed(self, packages: dict[str, int], libs: dict[str, _Library]) -> int:
        rows = await self.db.installed_dp_rows(self.site.code)
        for pkg_id, nal, version, busy in rows:
            lib = libs.get(nal)
            manifests = lib.manifests if lib is not None else {}
            if busy or content_id(pkg_id, version) in manifests:
                continue
            held = sorted(m.version for m in manifests.values() if m.package_id == pkg_id)
            self.problems.append(
                Problem(
                    lib.where if lib is not None else nal,
                    "not installed",
                    f"package {pkg_id}: the {self.site.code} database says Installed, but the"
                    f" DP does not hold its stored version {version} (holds:"
                    f" {', '.join(f'v{v}' for v in held) or 'nothing'})",
                )
            )
        return len(rows)

    async def _orphan_rows(self) -> None:
        for table, row, why in await self.db.orphan_rows():
            self.problems.append(Problem(self.where, "orphan row", f"{table}: {row}: {why}"))

    def _unknown_site_content(self, lib: _Library, packages: dict[str, int]) -> None:
        for m in lib.manifests.values():
            if m.package_id not in packages:
                self.problems.append(
                    Problem(
                        lib.where,
                        "orphan content",
                        f"{m.content_id}: package {m.package_id} is not in the"
                        f" {self.site.code} database",
                    )
                )

    async def _orphan_dp_content(
        self, packages: dict[str, int], libs: dict[str, tuple[_DP, _Library]]
    ) -> None:
        targets = await self.db.dp_targets(self.site.code)
        for nal, (_, lib) in libs.items():
            for m in lib.manifests.values():
                if m.package_id not in packages:
                    why = f"package {m.package_id} is not in the {self.site.code} database"
                elif (m.package_id, nal) not in targets:
                    why = f"package {m.package_id} does not target this DP any more"
                else:
                    continue
                self.problems.append(Problem(lib.where, "orphan content", f"{m.content_id}: {why}"))


async def _scan(where: str, root: Path) -> _Library:
    return await anyio.to_thread.run_sync(_scan_library, where, root)


def report_lines(report: CheckReport) -> list[str]:
    """The human form: one line per problem, then the verdict with the counts."""
    c = report.checked
    summary = (
        f"{c.databases} site databases, {c.packages} packages, {c.installed} Installed DP rows,"
        f" {c.libraries} libraries, {c.manifests} manifests, {c.files} files"
        f" ({c.bytes:,} bytes) checked"
    )
    verdict = "no problems found" if report.ok else f"{len(report.problems)} problems found"
    return [*(p.line() for p in report.problems), f"{summary}: {verdict}"]
