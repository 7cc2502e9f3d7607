"""A pull DP's state message (topic type 902), in the reference's ``<Report>`` shape: the
pull DP writes it, the MP relay carries it, the State System reads it."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import msgspec

from actors.errors import BadNotification

__all__ = [
    "PULLDP_TOPIC_TYPE",
    "STATE_FAILED",
    "STATE_IN_PROGRESS",
    "STATE_SUCCESS",
    "PullDPStateMessage",
    "parse_report",
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
