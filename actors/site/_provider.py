"""The SMS Provider operations of one site: what the admin console asks, as rows in the database.

Each operation checks its input and raises a typed error naming what was wrong, writing
nothing; otherwise it writes the reference's rows in one transaction (one operation of the
single writer's group commit) and the triggers do the rest: ``PkgNotification`` rows that
SMSDBMON hands to DistMgr. The checks run inside the write, so two concurrent calls cannot
both pass them (two adds of the same DP: one wins, one gets DuplicateDistribution).

An audit line per successful operation goes to ``SMSProv.log``, as in the reference.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from actors import addresses
from actors.config import DistributionPoint, HierarchyConfig
from actors.errors import (
    DuplicateDistribution,
    InvalidArgument,
    NotDistributed,
    NotSourceSite,
    PackageIdsExhausted,
    SourceUnavailable,
    UnknownPackage,
    UnknownSite,
)
from actors.sitedb import (
    PackageAction,
    ServerAction,
    SiteDatabase,
    UpdateMask,
    UpdateMaskEx,
    ops,
)
from actors.sitedb.schema import SMSPACKAGES_COLUMNS
from actors.status import CMTraceLog

__all__ = ["DEFAULT_LAST_REFRESH", "SmsProvider"]

DEFAULT_LAST_REFRESH = "04/10/1970 06:35:00"  # the product's "never refreshed"
_MAX_PACKAGE_NUMBER = 0xFFFFF


class SmsProvider:
    """The SMS Provider of site ``site`` over that site's database."""

    def __init__(
        self,
        db: SiteDatabase,
        hierarchy: HierarchyConfig,
        site: str,
        *,
        log: CMTraceLog | None = None,
        user: str = "CONTOSO\\Admin",
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        hierarchy.site(site)  # UnknownSite
        self.db = db
        self.hierarchy = hierarchy
        self.site = site
        self.user = user
        self.log = log
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self.id_floor = 0
        """The highest package number of this site found in its content libraries (set when
        the site starts): content a lost database no longer lists keeps its ID."""
        self._date_cache: tuple[dt.datetime | None, str] = (None, "")

    # -- operations ----------------------------------------------------------------------

    async def create_package(self, name: str, source: str | Path, *, priority: int = 2) -> str:
        """Create a package from a source folder; returns its ID (site code + 5 hex digits).

        IDs are never reused: the counter never goes below :attr:`id_floor`, the highest
        package number of this site that any of its content libraries holds."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgument(f"a package needs a name (a non-empty string), not {name!r}")
        if not isinstance(source, str | os.PathLike):
            raise InvalidArgument(f"a package source is a folder path, not {source!r}")
        if priority not in (1, 2, 3):
            raise InvalidArgument(f"priority {priority} is not 1 (high), 2 (medium) or 3 (low)")
        source_date = self._source_date()
        site = self.site
        first = self.id_floor + 1

        def op(conn: sqlite3.Connection) -> str:
            source_text = os.path.abspath(source)
            _check_source(source_text)
            number = ops.next_package_number(conn, site, first)
            if number > _MAX_PACKAGE_NUMBER:
                raise PackageIdsExhausted(site)
            pkg_id = addresses.package_id(site, number)
            values = _package_values(pkg_id, name, source_text, site, source_date, priority)
            ops.insert_package(conn, values)
            return pkg_id

        pkg_id = await self.db.write(op)
        self._trace(
            "CExtProviderClassObject::DoPutInstanceInstance~",
            f"Auditing: User {self.user} created an instance of class SMS_Package.~",
            f'Processed insert instance notification for: SMS_Package.PackageID="{pkg_id}"~',
        )
        return pkg_id

    async def add_distribution_points(self, pkg_id: str, dps: Sequence[str]) -> None:
        """AddDistributionPoints: a PkgServers row with Action 2 (ADD) per DP."""
        targets = self._resolve(dps, refuse_duplicates=pkg_id)

        def op(conn: sqlite3.Connection) -> None:
            pkg = _package(conn, pkg_id)
            for dp in targets:
                action = ops.server_action(conn, pkg_id, dp.nal_path)
                if action is not None and action != ServerAction.REMOVE:
                    raise DuplicateDistribution(pkg_id, dp.name)
                if action is not None:  # removal still pending: add it back
                    ops.set_server_actions(conn, pkg_id, [dp.nal_path], ServerAction.ADD)
                    continue
                if not ops.insert_pkg_server(
                    conn,
                    pkg_id=pkg_id,
                    nal_path=dp.nal_path,
                    site_code=dp.site,
                    source_site=pkg.source_site,
                    last_refresh=DEFAULT_LAST_REFRESH,
                ):
                    raise UnknownSite(dp.site)

        await self.db.write(op)
        self._audit_method(pkg_id, "AddDistributionPoints")

    async def refresh_pkg_source(self, pkg_id: str) -> None:
        """RefreshPkgSource (Update Distribution Points): Action 1 (UPDATE) on the package."""
        site = self.site

        def op(conn: sqlite3.Connection) -> None:
            pkg = _package(conn, pkg_id)
            if pkg.source_site != site:
                raise NotSourceSite(pkg_id, site, pkg.source_site)
            _check_source(pkg.source)
            ops.request_refresh(conn, pkg, pkg_id, UpdateMask.SOURCE, UpdateMaskEx.REFRESH_SOURCE)

        await self.db.write(op)
        self._audit_method(pkg_id, "RefreshPkgSource")

    async def redistribute(self, pkg_id: str, dp: str) -> None:
        """Redistribute to one DP (SMS_DistributionPoint.RefreshNow): RefreshTrigger = 1."""
        (target,) = self._resolve([dp])

        def op(conn: sqlite3.Connection) -> None:
            _package(conn, pkg_id)
            _require_server(conn, pkg_id, target)
            ops.request_redistribute(conn, pkg_id, target.nal_path)

        await self.db.write(op)
        self._audit(
            "modified an instance of class SMS_DistributionPoint"
            f'.PackageID="{pkg_id}",ServerNALPath="{target.nal_path}" (RefreshNow)'
        )

    async def remove_distribution_points(self, pkg_id: str, dps: Sequence[str]) -> None:
        """RemoveDistributionPoints: Action 3 (REMOVE) on each DP's PkgServers row."""
        targets = self._resolve(dps)

        def op(conn: sqlite3.Connection) -> None:
            _package(conn, pkg_id)
            for dp in targets:
                _require_server(conn, pkg_id, dp)
            ops.set_server_actions(
                conn, pkg_id, [dp.nal_path for dp in targets], ServerAction.REMOVE
            )

        await self.db.write(op)
        self._audit_method(pkg_id, "RemoveDistributionPoints")

    async def delete_package(self, pkg_id: str) -> None:
        """Delete: every DP gets Action 3 (REMOVE) and the package Action 3 (DELETE); DistMgr
        removes the content and then the rows."""
        site = self.site

        def op(conn: sqlite3.Connection) -> None:
            pkg = _package(conn, pkg_id)
            if pkg.source_site != site:
                raise NotSourceSite(pkg_id, site, pkg.source_site)
            ops.request_delete(conn, pkg_id)

        await self.db.write(op)
        self._audit(f'deleted an instance of class SMS_Package.PackageID="{pkg_id}"')

    # -- helpers -------------------------------------------------------------------------

    def _resolve(
        self, names: Sequence[str], *, refuse_duplicates: str | None = None
    ) -> list[DistributionPoint]:
        if isinstance(names, str) or not isinstance(names, Sequence) or not names:
            raise InvalidArgument(
                f"give a non-empty list of distribution point names, not {names!r}"
            )
        out: list[DistributionPoint] = []
        for name in names:
            if not isinstance(name, str):
                raise InvalidArgument(f"a distribution point is named by a string, not {name!r}")
            dp = self.hierarchy.dp(name)  # UnknownDistributionPoint
            if dp in out:
                if refuse_duplicates is not None:
                    raise DuplicateDistribution(refuse_duplicates, dp.name)
                continue
            out.append(dp)
        return out

    def _source_date(self) -> str:
        """Now, as SourceDate is written ("05/16/2016 15:22:12"); formatted once a second."""
        now = self._now().replace(microsecond=0)
        if now != self._date_cache[0]:
            self._date_cache = (now, now.strftime("%m/%d/%Y %H:%M:%S"))
        return self._date_cache[1]

    def _audit_method(self, pkg_id: str, method: str) -> None:
        """The four lines SMSProv.log has for a method call on a package."""
        self._trace(
            "Context: SMSAppName=Configuration Manager Administrator console~",
            f'ExecMethodAsync : SMS_Package.PackageID="{pkg_id}"::{method}~',
            f"CExtProviderClassObject::DoExecuteMethod {method}~",
            f"Auditing: User {self.user} called an audited method of an instance of class"
            " SMS_Package.~",
        )

    def _trace(self, *lines: str) -> None:
        if self.log is not None:
            self.log.write_lines(lines, when=self._now())

    def _audit(self, what: str) -> None:
        """The operation's audit line, in SMSProv.log's words, naming the instance."""
        if self.log is not None:
            self.log.write(f"Auditing: User {self.user} {what}.~", when=self._now())


def _package(conn: sqlite3.Connection, pkg_id: str) -> ops.ProviderPackage:
    pkg = ops.provider_package(conn, pkg_id)
    if pkg is None or pkg.action == PackageAction.DELETE:
        raise UnknownPackage(pkg_id)
    return pkg


def _require_server(conn: sqlite3.Connection, pkg_id: str, dp: DistributionPoint) -> None:
    action = ops.server_action(conn, pkg_id, dp.nal_path)
    if action is None or action == ServerAction.REMOVE:
        raise NotDistributed(pkg_id, dp.name)


def _check_source(source: str) -> None:
    """The source folder must exist, be a folder and be listable."""
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise SourceUnavailable(source, "it does not exist") from None
    except OSError as e:
        raise SourceUnavailable(source, e.strerror or str(e)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise SourceUnavailable(source, "it is not a folder")
    if not os.access(source, os.R_OK | os.X_OK):
        raise SourceUnavailable(source, "it cannot be read")


def _package_values(
    pkg_id: str, name: str, source: str, site: str, source_date: str, priority: int
) -> tuple[object, ...]:
    """The reference's ``insert SMSPackages`` values for a new package, column by column."""
    values = list(_NEW_PACKAGE)
    for column, value in (
        ("PkgID", pkg_id),
        ("Name", name),
        ("Source", source),
        ("SourceSite", site),
        ("SourceDate", source_date),
        ("Priority", priority),
    ):
        values[_COLUMN[column]] = value
    return tuple(values)


_COLUMN = {c: i for i, c in enumerate(SMSPACKAGES_COLUMNS)}
# The reference's values for the columns a new package does not choose.
_DEFAULTS: dict[str, object] = {
    "Version": "", "Language": "", "Manufacturer": "", "Description": "", "ISVString": "",
    "Hash": "", "NewHash": "", "StoredPkgPath": "", "RefreshSchedule": "",
    "LastRefresh": DEFAULT_LAST_REFRESH, "StoredPkgVersion": 0, "ShareName": "",
    "PreferredAddress": "", "StorePkgFlag": 2, "ShareType": 1, "HashVersion": 1,
    "Architecture": "", "ImagePath": "", "Permission": 15, "UseForcedDisconnect": 0,
    "ForcedRetryDelay": 2, "DisconnectDelay": 5, "IgnoreSchedule": 0, "PkgFlags": 16777216,
    "MIFFilename": "", "MIFPublisher": "", "MIFName": "", "MIFVersion": "", "SourceVersion": 1,
    "SourceSize": 0, "SourceCompSize": 0, "ImageFlags": 0, "PackageType": 0,
    "AlternateContentProviders": "", "SourceLocaleID": 1033, "TransformReadiness": 0,
    "TransformAnalysisDate": "1980/01/01 00:00:00", "UpdateMask": 0, "UpdateMaskEx": 0,
    "Action": int(PackageAction.ADD), "DefaultImage": 0,
}  # fmt: skip
_NEW_PACKAGE: tuple[object, ...] = tuple(_DEFAULTS.get(c) for c in SMSPACKAGES_COLUMNS)
