"""A pull DP's state message (topic type 902), in the reference's ``<Report>`` shape: the
pull DP writes it, the MP relay carries it, the State System reads it."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

import msgspec

from actors.errors import BadNotification

__all__ = [
    "PULLDP_TOPIC_TYPE",
    "STATE_FAILED",
    "STATE_IN_PROGRESS",
    "STATE_SUCCESS",
    "PullDPStateMessage",
    "PullProgress",
    "parse_progress",
    "parse_report",
    "progress_data",
    "report_xml",
]

PULLDP_TOPIC_TYPE = 902
# State IDs of topic type 902 (the reference shows 1; 2 and 3 per the product's
# documentation of pull DP state messages).
STATE_SUCCESS = 1
STATE_IN_PROGRESS = 2  # the first UserParameter after the DP carries the percentage
STATE_FAILED = 3


class PullDPStateMessage(msgspec.Struct, frozen=True):
    machine: str  # the pull DP's name (NetBIOSName)
    pkg_id: str  # Topic ID
    version: int  # SerialNumber
    state: int  # State ID
    nal_path: str
    job_guid: str
    data: str  # percentage or error text
    time: dt.datetime


class PullProgress(msgspec.Struct, frozen=True):
    """What an in-progress message (State 2) carries: the download's percentage and, in
    the job's last one (100 %, sent once its downloads are done), the bytes that crossed
    for it (whole files and RDC apart): the site's ``DPTransferBytes`` for the pull DP.
    The success message keeps the reference's empty fourth parameter."""

    percent: int
    bytes_full: int | None = None
    bytes_delta: int | None = None


_PROGRESS = re.compile(r"(\d{1,3})(?:;BytesFull=(\d+);BytesDelta=(\d+))?")


def progress_data(p: PullProgress) -> str:
    """The fourth UserParameter of a State 2 message: ``40``, or
    ``100;BytesFull=1048576;BytesDelta=0`` in a job's last one."""
    if p.bytes_full is None or p.bytes_delta is None:
        return str(p.percent)
    return f"{p.percent};BytesFull={p.bytes_full};BytesDelta={p.bytes_delta}"


def parse_progress(data: str) -> PullProgress | None:
    """A State 2 message's parameter read back (None: not in that shape)."""
    m = _PROGRESS.fullmatch(data.strip())
    if m is None or int(m.group(1)) > 100:
        return None
    if m.group(2) is None:
        return PullProgress(int(m.group(1)))
    return PullProgress(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def _stamp(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S.%f+000")


def report_xml(m: PullDPStateMessage) -> str:
    report = ET.Element("Report")
    header = ET.SubElement(report, "ReportHeader")
    machine = ET.SubElement(ET.SubElement(header, "Identification"), "Machine")
    for tag, text in (("ClientInstalled", "0"), ("ClientType", "1"), ("Unknown", "0")):
        ET.SubElement(machine, tag).text = text
    ET.SubElement(machine, "NetBIOSName").text = m.machine
    details = ET.SubElement(header, "ReportDetails")
    for tag, text in (
        ("ReportContent", "StateMessage"),
        ("ReportType", "Full"),
        ("Date", _stamp(m.time)),
        ("Version", "1.0"),
        ("Format", "1.1"),
    ):
        ET.SubElement(details, tag).text = text
    body = ET.SubElement(report, "ReportBody")
    state = ET.SubElement(
        body, "StateMessage", {"MessageTime": _stamp(m.time), "SerialNumber": str(m.version)}
    )
    ET.SubElement(state, "Topic", {"ID": m.pkg_id, "Type": str(PULLDP_TOPIC_TYPE), "IDType": "0"})
    ET.SubElement(state, "State", {"ID": str(m.state), "Criticality": "0"})
    params = ET.SubElement(state, "UserParameters", {"Flags": "0", "Count": "4"})
    for text in (m.pkg_id, m.nal_path, m.job_guid, m.data):
        ET.SubElement(params, "Param").text = text
    return ET.tostring(report, encoding="unicode")


def parse_report(text: str) -> PullDPStateMessage:
    """Read a pull DP state message; anything else raises :class:`BadNotification`."""
    try:
        report = ET.fromstring(text)
        machine = report.findtext("ReportHeader/Identification/Machine/NetBIOSName") or ""
        state = report.find("ReportBody/StateMessage")
        if state is None:
            raise BadNotification("the report holds no StateMessage")
        topic, sid = state.find("Topic"), state.find("State")
        if topic is None or sid is None or int(topic.attrib["Type"]) != PULLDP_TOPIC_TYPE:
            raise BadNotification("not a pull DP state message (topic type 902)")
        params = [p.text or "" for p in state.findall("UserParameters/Param")]
        if len(params) != 4:
            raise BadNotification(f"a pull DP state message has 4 parameters, not {len(params)}")
        when = dt.datetime.strptime(state.attrib["MessageTime"][:21], "%Y%m%d%H%M%S.%f")
        return PullDPStateMessage(
            machine=machine,
            pkg_id=topic.attrib["ID"],
            version=int(state.attrib["SerialNumber"]),
            state=int(sid.attrib["ID"]),
            nal_path=params[1],
            job_guid=params[2],
            data=params[3],
            time=when.replace(tzinfo=dt.UTC),
        )
    except (ET.ParseError, KeyError, ValueError) as exc:
        raise BadNotification(f"malformed state message: {exc!r}") from exc
