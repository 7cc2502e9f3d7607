"""Site-server components: SMS Provider, DistMgr, PkgXferMgr, SMSDBMON, content validation,
the MP relay and the State System."""

from actors.site._contentvalidator import ContentValidator, ValidateAll, ValidateContent
from actors.site._despooler import Despooler
from actors.site._distmgr import PACKAGE_CHANGED_TOPIC, DistMgr
from actors.site._inbox import StatusInbox
from actors.site._instruction import SiteKey
from actors.site._pkgxfermgr import CANCELLED_REASON, PROGRESS_INTERVAL, PkgXferMgr, RetryJob
from actors.site._provider import DEFAULT_LAST_REFRESH, SmsProvider
from actors.site._scheduler import Scheduler
from actors.site._sender import Sender
from actors.site._sharewatch import ShareWatch
from actors.site._smsdbmon import SmsDbMon
from actors.site._statesys import MpRelay, StateMessageFile, StateSystem

__all__ = [
    "CANCELLED_REASON",
    "DEFAULT_LAST_REFRESH",
    "PACKAGE_CHANGED_TOPIC",
    "PROGRESS_INTERVAL",
    "ContentValidator",
    "Despooler",
    "DistMgr",
    "MpRelay",
    "PkgXferMgr",
    "RetryJob",
    "Scheduler",
    "Sender",
    "ShareWatch",
    "SiteKey",
    "SmsDbMon",
    "SmsProvider",
    "StateMessageFile",
    "StateSystem",
    "StatusInbox",
    "ValidateAll",
    "ValidateContent",
]
