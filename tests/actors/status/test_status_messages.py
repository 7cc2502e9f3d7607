"""Status messages: the reference's STATMSG line, stored, published, logged in CMTrace format."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from actors.config import nal_path
from actors.sitedb import SiteDatabase
from actors.status import (
    ATTR_DP_NAL_PATH,
    ATTR_PACKAGE_ID,
    ATTR_PACKAGE_VERSION,
    MESSAGES,
    PKGXFERMGR,
    STATUS_TOPIC,
    ComponentLogs,
    StatusMessage,
    StatusReporter,
    describe,
    format_statmsg,
    last_message_id,
    stored_messages,
)

NAL = nal_path("PS1DP1.CONTOSO.COM", "PS1")
WHEN = dt.datetime(2016, 5, 16, 16, 34, 27, 614000, tzinfo=dt.UTC)


def test_every_reference_message_id_has_a_meaning() -> None:
    for mid in (2300, 2301, 2311, 2330, 2333, 2342, 2357, 2376, 4400, 8200, 8210, 8211, 8212):
        assert mid in MESSAGES
    assert MESSAGES[8211].severity == "E"
    assert MESSAGES[8212].severity == "I"  # as the reference logs it


def test_statmsg_line_matches_the_reference() -> None:
    msg = StatusMessage(
        message_id=8210,
        severity="I",
        component=PKGXFERMGR,
        site="PS1",
        system="PS1SITE.CONTOSO.COM",
        time=WHEN,
        strings=("CS100026", "1", "PS1DP1.CONTOSO.COM"),
        attributes={ATTR_PACKAGE_ID: "CS100026", ATTR_PACKAGE_VERSION: "1", ATTR_DP_NAL_PATH: NAL},
    )
    empty = " ".join(f'ISTR{i}=""' for i in range(3, 10))
    assert format_statmsg(msg, pid=5428, tid=4844) == (
        'STATMSG: ID=8210 SEV=I LEV=M SOURCE="SMS Server" COMP="SMS_PACKAGE_TRANSFER_MANAGER"'
        " SYS=PS1SITE.CONTOSO.COM SITE=PS1 PID=5428 TID=4844 GMTDATE=Mon May 16 16:34:27.614 2016"
        f' ISTR0="CS100026" ISTR1="1" ISTR2="PS1DP1.CONTOSO.COM" {empty} NUMATTRS=3'
        f' AID0=400 AVAL0="CS100026" AID1=410 AVAL1="1" AID2=404 AVAL2="{NAL}"'
    )
    assert describe(msg) == (
        'Package Transfer Manager successfully sent package "CS100026" version 1 to'
        " distribution point PS1DP1.CONTOSO.COM."
    )


async def test_report_stores_publishes_and_logs(tmp_path: Path) -> None:
    published: list[tuple[str, StatusMessage]] = []

    async def publish(topic: str, msg: StatusMessage) -> None:
        published.append((topic, msg))

    logs = ComponentLogs(tmp_path / "logs")
    async with SiteDatabase.open(tmp_path / "site.db") as db:
        reporter = StatusReporter(
            db, logs, site="PS1", system="PS1SITE.CONTOSO.COM", publish=publish, now=lambda: WHEN
        )
        await reporter.report(2342, ("Dummy1", NAL), {ATTR_PACKAGE_ID: "CS100026", 404: NAL})
        sent = await reporter.report(
            2330, ("CS100026", NAL), {ATTR_PACKAGE_ID: "CS100026", 404: NAL}, thread=6116
        )
        assert await last_message_id(db, "CS100026", NAL) == 2330
        assert await last_message_id(db, "CS100026", "elsewhere") is None
        stored = await stored_messages(db)
        with pytest.raises(KeyError, match="9999"):
            reporter.message(9999)
    logs.close()
    assert stored[-1] == sent
    assert [m.message_id for m in stored] == [2342, 2330]
    assert [(t, m.message_id) for t, m in published] == [(STATUS_TOPIC, 2342), (STATUS_TOPIC, 2330)]
    lines = (tmp_path / "logs" / "distmgr.log").read_text().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(
        r'<!\[LOG\[STATMSG: ID=2330 SEV=I .* NUMATTRS=2 .*\]LOG\]!><time="16:34:27\.614\+000"'
        r' date="05-16-2016" component="SMS_DISTRIBUTION_MANAGER" context="" type="1"'
        r' thread="6116" file="">',
        lines[1],
    )
