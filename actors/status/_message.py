"""A status message: what the reference's ``STATMSG:`` lines carry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import msgspec

from actors.config import server_of_nal
from actors.status._catalog import ATTR_DP_NAL_PATH, ATTR_PACKAGE_ID, MESSAGES, PKGXFERMGR, Severity

__all__ = [
    "StatusMessage",
    "describe",
    "message_dp",
]


class StatusMessage(msgspec.Struct, frozen=True):
    """What a ``STATMSG:`` line carries, plus where it is stored and which DP it concerns."""

    message_id: int  # 2300, 2330, 8210, ...
    severity: Severity  # "I", "W" or "E"
    component: str  # "SMS_DISTRIBUTION_MANAGER", "SMS_PACKAGE_TRANSFER_MANAGER", ...
    site: str  # "PS1"
    system: str  # "PS1SITE.CONTOSO.COM"
    time: dt.datetime
    strings: tuple[str, ...]  # ISTR0..ISTR9
    attributes: dict[int, str]  # 400: package ID, 404: DP NAL path, 410: version
    dp: str | None = None
    """The plain name of the DP the message concerns (the NAL path is attribute 404)."""
    record_id: int = 0
    """``StatusMessages.RecordID`` in the site's database (0 until stored): a subscriber
    that keeps the last one per site can replay from there after a restart."""

    @property
    def pkg_id(self) -> str | None:
        """The package it concerns (attribute 400), if any."""
        return self.attributes.get(ATTR_PACKAGE_ID)

    @property
    def nal_path(self) -> str | None:
        """The NAL path of the DP it concerns (attribute 404), if any."""
        return self.attributes.get(ATTR_DP_NAL_PATH)


def describe(msg: StatusMessage) -> str:
    """The message's text with its insertion strings filled in."""
    info = MESSAGES.get(msg.message_id)
    if info is None:
        return f"Status message {msg.message_id}"
    text = info.text
    for i in range(10, 0, -1):  # %10 before %1
        text = text.replace(f"%{i}", msg.strings[i - 1] if i <= len(msg.strings) else "")
    return text


def message_dp(
    component: str, strings: tuple[str, ...], attributes: Mapping[int, str]
) -> str | None:
    """The DP a message concerns, by plain name: from its NAL path attribute, or for
    PkgXferMgr's messages (whose 8200 names no DP attribute) from its third string."""
    nal = attributes.get(ATTR_DP_NAL_PATH)
    if nal is not None:
        return server_of_nal(nal)
    if component == PKGXFERMGR and len(strings) > 2 and strings[2]:
        return strings[2]
    return None
