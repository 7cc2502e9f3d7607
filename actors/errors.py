"""Every error cmdist raises on purpose: each names what was wrong; raising one changes nothing.

The tree (catch a branch to catch what is under it)::

    CmdistError
    ├── HierarchyConfigError       a hierarchy file or config: the file, the key, the problem
    ├── SiteDatabaseError          a site.db that cannot be used: the file, the problem
    │   └── SiteDatabaseLost       missing or empty while the site's libraries hold content
    ├── DataRootError              a data root that holds no run (cmdist status / check)
    ├── DataRootLocked             the data root is open elsewhere: names the holder's PID
    ├── HierarchyClosed            a call on a closed (or closing) Hierarchy
    ├── HierarchyFailed            the running hierarchy stopped on a failure (cause chained)
    ├── NotSupported               a request this build cannot carry out (says why)
    ├── InvalidArgument            a malformed argument (a wrong type, an empty name, ...)
    ├── UnknownSite / UnknownPackage / UnknownDistributionPoint
    ├── DuplicateDistribution      already distributed to that DP
    ├── NotDistributed             not distributed to that DP
    ├── NotSourceSite              changed at a site other than the package's source site
    ├── SourceUnavailable          a package source that does not exist or cannot be read
    ├── PackageIdsExhausted        a site has used all 1,048,576 package IDs
    ├── WaitTimeout                ``wait``/``delete`` ran out of time: names what is pending
    ├── BadNotification            a pull DP notification or .TZ bundle that cannot be used
    └── TransferError              moving content failed (retried on the schedule)
        ├── LinkDown
        ├── LinkCut
        └── DownloadFailed         a pull DP found no source that gave a file whole

The content library's own errors (``contentlib.ContentLibError``: ``HashMismatch``,
``TargetNotEmpty``, ``UnsafePath``, ...) reach callers of ``extract`` as they are.
"""

from __future__ import annotations

__all__ = [
    "BadNotification",
    "CmdistError",
    "DataRootError",
    "DataRootLocked",
    "DownloadFailed",
    "DuplicateDistribution",
    "HierarchyClosed",
    "HierarchyConfigError",
    "HierarchyFailed",
    "InvalidArgument",
    "LinkCut",
    "LinkDown",
    "NotDistributed",
    "NotSourceSite",
    "NotSupported",
    "PackageIdsExhausted",
    "SiteDatabaseError",
    "SiteDatabaseLost",
    "SourceUnavailable",
    "TransferError",
    "UnknownDistributionPoint",
    "UnknownPackage",
    "UnknownSite",
    "WaitTimeout",
]


class CmdistError(Exception):
    """Base of every error cmdist raises on purpose."""


class HierarchyConfigError(CmdistError):
    """A hierarchy file that cannot be used: names the file, the key and the problem."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        super().__init__(f"{file}: {key}: {problem}" if key else f"{file}: {problem}")


class UnknownSite(CmdistError):
    def __init__(self, site: str) -> None:
        self.site = site
        super().__init__(f"unknown site code {site!r}")


class UnknownPackage(CmdistError):
    def __init__(self, pkg_id: str) -> None:
        self.pkg_id = pkg_id
        super().__init__(f"unknown package {pkg_id!r}")


class UnknownDistributionPoint(CmdistError):
    def __init__(self, dp: str) -> None:
        self.dp = dp
        super().__init__(f"distribution point {dp!r} is not in the hierarchy")


class DuplicateDistribution(CmdistError):
    def __init__(self, pkg_id: str, dp: str) -> None:
        self.pkg_id = pkg_id
        self.dp = dp
        super().__init__(f"package {pkg_id!r} is already distributed to {dp!r}")


class NotDistributed(CmdistError):
    def __init__(self, pkg_id: str, dp: str) -> None:
        self.pkg_id = pkg_id
        self.dp = dp
        super().__init__(f"package {pkg_id!r} is not distributed to {dp!r}")


class SourceUnavailable(CmdistError):
    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"package source {source!r} is unavailable: {reason}")


class PackageIdsExhausted(CmdistError):
    def __init__(self, site: str) -> None:
        self.site = site
        super().__init__(f"site {site!r} has used all 1,048,576 package IDs")


class NotSourceSite(CmdistError):
    def __init__(self, pkg_id: str, site: str, source_site: str) -> None:
        self.pkg_id = pkg_id
        self.site = site
        self.source_site = source_site
        super().__init__(
            f"package {pkg_id!r} can only be changed at its source site {source_site!r},"
            f" not at {site!r}"
        )


class InvalidArgument(CmdistError):
    """A provider call with a malformed argument (an empty name, no DPs, ...)."""


class TransferError(CmdistError):
    """Moving content to a DP or a site failed; the job is retried on the configured schedule."""


class LinkDown(TransferError):
    """A link refused a transfer (down, or an injected connection failure)."""

    def __init__(self, link: str, reason: str = "the link is down") -> None:
        self.link = link
        super().__init__(f"link {link}: {reason}")


class LinkCut(TransferError):
    """A transfer over a link was cut half way (an injected fault)."""

    def __init__(self, link: str, sent: int) -> None:
        self.link = link
        self.sent = sent
        super().__init__(f"link {link} was cut after {sent} bytes of this transfer")


class DownloadFailed(TransferError):
    """A pull DP's download of a file failed from every source it may use (each reason
    named); the content job is retried."""


class BadNotification(CmdistError):
    """A pull DP notification or package info bundle (``.TZ``) that cannot be used
    (malformed, or its hash does not match): the job is refused, nothing is downloaded."""


class NotSupported(CmdistError):
    """A request this build of cmdist cannot carry out yet; the message says what and why."""


class WaitTimeout(CmdistError):
    """``Hierarchy.wait`` ran out of time; ``pending`` names the DPs that are not final."""

    def __init__(self, pkg_id: str, timeout: float, pending: dict[str, str]) -> None:
        self.pkg_id = pkg_id
        self.pending = pending
        detail = ", ".join(f"{dp} ({state})" for dp, state in sorted(pending.items()))
        super().__init__(
            f"package {pkg_id!r} is not final on every DP after {timeout:g} s: {detail}"
        )


class SiteDatabaseError(CmdistError):
    """A site database that cannot be used (damaged, not a database, newer schema): names the
    file and the problem. Nothing was written to it."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"site database {path}: {problem}")


class SiteDatabaseLost(SiteDatabaseError):
    """A site's database is missing or empty while the site's content libraries hold
    content: starting it as a new site would reuse package IDs whose content the DPs hold."""


class HierarchyClosed(CmdistError):
    """An operation on a :class:`~actors.hierarchy.Hierarchy` that is closed (or closing)."""

    def __init__(self, what: str = "") -> None:
        super().__init__(f"the hierarchy is closed{': ' + what if what else ''}")


class DataRootLocked(CmdistError):
    """The data root is open in another ``Hierarchy`` (this process or another): a data root
    has one owner at a time. The lock is the OS's, so it goes with a killed process."""

    def __init__(self, root: str, holder: str) -> None:
        self.root = root
        self.holder = holder
        super().__init__(f"data root {root} is in use by {holder}")


class HierarchyFailed(CmdistError):
    """The running hierarchy stopped on an internal failure (a component that kept failing
    and was stopped by its supervisor); the cause is chained. Every call after it raises
    this too, until the hierarchy is closed."""


class DataRootError(CmdistError):
    """A data root that holds no run: it does not exist, or has no site database."""
