"""The site components, the site database, the hierarchy wiring, the public facade and the CLI."""

from actors import errors
from actors.config import HierarchyConfig, load_hierarchy
from actors.provider import SmsProvider
from actors.sitedb import SiteDatabase
from actors.smsdbmon import SmsDbMon
from actors.status import StatusMessage

__all__: list[str] = [
    "HierarchyConfig",
    "SiteDatabase",
    "SmsDbMon",
    "SmsProvider",
    "StatusMessage",
    "errors",
    "load_hierarchy",
]
