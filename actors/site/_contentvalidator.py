"""Content validation: a DP's files checked against the hashes its content library names.

The product validates a DP's content on a schedule and on demand: the DP rehashes every
file of a package, and damaged content turns the package's status on that DP to Failed
until a redistribute repairs it. Here the site's ``ContentValidator`` asks each standard DP
of the site (``DPValidate``) and writes the outcome as the product reports it: 2380 when it
starts, then 2384 (verified) or 2383 (failed, naming the files) with the DP's ``PkgStatus``
row set to Failed in the same commit. On start it also reports content whose manifest the
DP's library quarantined when it opened (damaged on disk).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

import msgspec

from actors import addresses
from actors.dp import DPDamaged, DPDamageReport, DPValidate, DPValidation
from actors.site.messages import PACKAGE_CHANGED_TOPIC, PackageChanged
from actors.sitedb import (
    DistributionPointRow,
    PkgStatusValue,
    SiteDatabase,
    ops,
    product_time,
)
from actors.status import ATTR_DP_NAL_PATH, ATTR_PACKAGE_ID, Component, StatusReporter
from bus import handler

__all__ = ["ContentValidator", "ValidateAll", "ValidateContent"]


class ValidateContent(msgspec.Struct, frozen=True):
    """Validate one package on one DP (by server name); answered with a DPValidation."""

    pkg_id: str
    dp: str


class ValidateAll(msgspec.Struct, frozen=True):
    """The schedule's tick: validate every package Installed on the site's standard DPs."""


class ContentValidator(Component):
    """``<SITE>/ContentValidator``."""

    def __init__(
        self,
        *,
        site: str,
        db: SiteDatabase,
        reporter: StatusReporter,
        dps: Sequence[str],
        interval: float | None,
    ) -> None:
        self.site = site
        self.db = db
        self.reporter = reporter
        self.dps = tuple(dps)
        self.interval = interval

    async def on_start(self) -> None:
        for name in self.dps:
            report: DPDamageReport = await self.request(_provider(name), DPDamaged(), None)
            for pkg_id, reason in report.damaged.items():
                await self._record(name, DPValidation(pkg_id, 0), reason)
        if self.interval:
            self.send_later(self.interval, self.address, ValidateAll())

    @handler
    async def validate(self, msg: ValidateContent) -> DPValidation:
        return await self._validate(msg.pkg_id, msg.dp)

    @handler
    async def validate_all(self, msg: ValidateAll) -> None:
        # The next run is due an interval after this one began, not after it ended: the
        # schedule does not drift by how long a run takes (nor miss a clock moved meanwhile).
        if self.interval:
            self.send_later(self.interval, self.address, ValidateAll())
        for name in self.dps:
            dp = await self.db.distribution_point(name)
            if dp is None:
                continue
            for row in await self.db.installed_packages(dp.nal_path):
                await self._validate(row, name)

    async def _validate(self, pkg_id: str, name: str) -> DPValidation:
        dp = await self.db.distribution_point(name)
        if dp is None:
            return DPValidation(pkg_id, 0)
        await self.reporter.report(2380, (pkg_id, dp.nal_path), _attributes(pkg_id, dp))
        result: DPValidation = await self.request(_provider(name), DPValidate(pkg_id), None)
        problems = [*(f"{p} (missing)" for p in result.missing)]
        problems += [f"{p} (damaged)" for p in result.corrupt]
        if result.version and not problems:
            await self.reporter.report(2384, (pkg_id, dp.nal_path), _attributes(pkg_id, dp))
        else:
            reason = "; ".join(problems) if problems else "the DP holds no content of it"
            await self._record(name, result, reason)
        return result

    async def _record(self, name: str, result: DPValidation, reason: str) -> None:
        """2383 and the DP's status Failed, in one commit: only for a DP the package
        targets (a DP that was never asked for it has no status to fail)."""
        dp = await self.db.distribution_point(name)
        if dp is None:
            return
        pkg_id = result.pkg_id
        now = product_time(self.clock.wall())

        def op(conn: sqlite3.Connection) -> None:
            version = ops.targeted_version(conn, pkg_id, dp.nal_path)
            if version is None:
                return
            ops.upsert_dp_status(
                conn,
                pkg_id=pkg_id,
                dp=dp,
                status=PkgStatusValue.FAILED,
                version=result.version or version,
                now=now,
            )

        await self.reporter.report(
            2383, (pkg_id, dp.nal_path, reason), _attributes(pkg_id, dp), op=op
        )
        await self.publish(PACKAGE_CHANGED_TOPIC, PackageChanged(pkg_id))


def _attributes(pkg_id: str, dp: DistributionPointRow) -> Mapping[int, str]:
    return {ATTR_PACKAGE_ID: pkg_id, ATTR_DP_NAL_PATH: dp.nal_path}


def _provider(name: str) -> str:
    return addresses.dp_provider(name)
