"""Bus addresses of the components, and package IDs: one place that knows how they are
spelled.

A site server's components live at ``<SITE>/<Component>`` (``PS1/DistMgr``); a DP's at
``<DP server name>/DPProvider``. A package ID is its source site's code and five hex digits
(``CS100006``).
"""

from __future__ import annotations

__all__ = [
    "content_validator",
    "despooler",
    "distmgr",
    "dp_provider",
    "drs",
    "package_id",
    "package_site",
    "pkgxfermgr",
    "pulldp",
    "scheduler",
    "sender",
    "smsdbmon",
    "statesys",
]


def distmgr(site: str) -> str:
    return f"{site}/DistMgr"


def drs(site: str) -> str:
    return f"{site}/DRS"


def pkgxfermgr(site: str) -> str:
    return f"{site}/PkgXferMgr"


def smsdbmon(site: str) -> str:
    return f"{site}/SMSDBMON"


def content_validator(site: str) -> str:
    return f"{site}/ContentValidator"


def dp_provider(dp: str) -> str:
    return f"{dp}/DPProvider"


def scheduler(site: str) -> str:
    return f"{site}/Scheduler"


def sender(site: str) -> str:
    return f"{site}/Sender"


def despooler(site: str) -> str:
    return f"{site}/Despooler"


def pulldp(dp: str) -> str:
    """The PullDP component on a pull DP's machine."""
    return f"{dp}/PullDP"


def statesys(site: str) -> str:
    return f"{site}/StateSys"


_PKG_NUMBER_DIGITS = 5


def package_id(site: str, number: int) -> str:
    """The ID of ``site``'s package ``number`` (``CS1``, 6 -> ``CS100006``)."""
    return f"{site}{number:0{_PKG_NUMBER_DIGITS}X}"


def package_site(pkg_id: str) -> str:
    """The code of the site a package ID was made at: its source site."""
    return pkg_id[:-_PKG_NUMBER_DIGITS]
