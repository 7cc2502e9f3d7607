"""What a site tells a pull DP, and what both sides read the same way: the package info
bundle (``<PkgID>.TZ`` in the pull DP's ``SMS_DP$``), the notification XML
(``fnGetPullDPXMLNotification``'s shape) and the requests the pull DP answers.

Where the reference contradicts itself we read it one way: its sample XML says
``Action='redist'`` while its text (and the query beside it) says ``add`` for a first
distribution — we write ``add`` for add/update jobs and ``redist`` for a redistribute. Its
DPUrl is ``http://`` while Protocol says ``https``: our server speaks plain HTTP on
127.0.0.1, so Protocol says ``http``, matching the URL that is really used.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from typing import Literal

import msgspec
import zstandard

from actors.errors import BadNotification
from contentlib import Manifest

__all__ = [
    "HASH_ALGORITHM",
    "PackageInfoBundle",
    "PullAction",
    "PullContent",
    "PullDPHolds",
    "PullDPNotify",
    "PullLocation",
    "PullNotification",
    "bundle_bytes",
    "bundle_name",
    "notification_xml",
    "parse_notification",
    "read_bundle",
]

HASH_ALGORITHM = 32780  # CALG_SHA_256, as the notification's HashAlgorithm says

PullAction = Literal["add", "redist"]


class PackageInfoBundle(msgspec.Struct, frozen=True):
    """The ``.TZ``: what the pull DP must hold for the package version, per content."""

    pkg_id: str
    version: int
    contents: tuple[Manifest, ...]


def bundle_name(pkg_id: str) -> str:
    return f"{pkg_id}.TZ"


def bundle_bytes(bundle: PackageInfoBundle) -> tuple[bytes, str]:
    """The ``.TZ``'s bytes (zstd-compressed JSON) and their SHA-256 (upper-case hex)."""
    data = zstandard.ZstdCompressor().compress(msgspec.json.encode(bundle))
    return data, hashlib.sha256(data).hexdigest().upper()


def read_bundle(data: bytes, expected_hash: str) -> PackageInfoBundle:
    """Check the ``.TZ`` against the notification's hash, then decode it."""
    got = hashlib.sha256(data).hexdigest().upper()
    if got != expected_hash.upper():
        raise BadNotification(f"package info bundle hash {got} is not {expected_hash}")
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=256 << 20)
        return msgspec.json.decode(raw, type=PackageInfoBundle)
    except (zstandard.ZstdError, msgspec.DecodeError) as exc:
        raise BadNotification(f"package info bundle unreadable: {exc}") from exc


class PullLocation(msgspec.Struct, frozen=True):
    """A ``DPLocation``: where a source DP serves the content."""

    url: str
    rank: int
    source: str  # the source DP's server name
    type: str = "Windows NT Server"
    protocol: str = "http"


class PullContent(msgspec.Struct, frozen=True):
    content_id: str
    locations: tuple[PullLocation, ...]  # best rank first


class PullNotification(msgspec.Struct, frozen=True):
    pkg_id: str
    version: int
    action: PullAction
    allow_fallback: bool
    package_size: int
    hash: str  # of the .TZ
    contents: tuple[PullContent, ...]
    priority: int = 2


def notification_xml(n: PullNotification) -> str:
    """The reference's ``PullDPNotification`` document."""
    root = ET.Element("PullDPNotification")
    pkg = ET.SubElement(
        root,
        "PullDPPackageNotification",
        {
            "PackageID": n.pkg_id,
            "Version": str(n.version),
            "Action": n.action,
            "AllowFallback": "true" if n.allow_fallback else "false",
            "Priority": str(n.priority),
            "PackageType": "content",
            "PackageTypeID": "0",
            "PackageFlags": "16777216",
            "PackageSize": str(n.package_size),
            "HashAlgorithm": str(HASH_ALGORITHM),
            "Hash": n.hash,
            "ExpandShare": "0",
            "ShareName": "",
            "ShareType": "1",
        },
    )
    for c in n.contents:
        content = ET.SubElement(pkg, "PullDPPackageContent", {"ContentID": c.content_id})
        for loc in c.locations:
            ET.SubElement(
                content,
                "DPLocation",
                {
                    "DPUrl": loc.url,
                    "Rank": str(loc.rank),
                    "Type": loc.type,
                    "Protocol": loc.protocol,
                    "ServerName": loc.source,
                },
            )
    return ET.tostring(root, encoding="unicode")


def parse_notification(text: str) -> PullNotification:
    """Read a notification; a malformed one raises :class:`BadNotification`."""
    try:
        root = ET.fromstring(text)
        pkg = root.find("PullDPPackageNotification")
        if root.tag != "PullDPNotification" or pkg is None:
            raise BadNotification("not a PullDPNotification document")
        action = pkg.attrib["Action"]
        if action not in ("add", "redist"):
            raise BadNotification(f"unknown action {action!r}")
        if int(pkg.attrib["HashAlgorithm"]) != HASH_ALGORITHM:
            raise BadNotification(f"unknown hash algorithm {pkg.attrib['HashAlgorithm']}")
        contents = tuple(
            PullContent(
                c.attrib["ContentID"],
                tuple(
                    sorted(
                        (
                            PullLocation(
                                loc.attrib["DPUrl"],
                                int(loc.attrib["Rank"]),
                                loc.attrib["ServerName"],
                                loc.attrib.get("Type", ""),
                                loc.attrib.get("Protocol", ""),
                            )
                            for loc in c.findall("DPLocation")
                        ),
                        key=lambda loc: loc.rank,
                    )
                ),
            )
            for c in pkg.findall("PullDPPackageContent")
        )
        return PullNotification(
            pkg_id=pkg.attrib["PackageID"],
            version=int(pkg.attrib["Version"]),
            action="redist" if action == "redist" else "add",
            allow_fallback=pkg.attrib.get("AllowFallback", "true") == "true",
            package_size=int(pkg.attrib.get("PackageSize", "0")),
            hash=pkg.attrib["Hash"],
            contents=contents,
            priority=int(pkg.attrib.get("Priority", "2")),
        )
    except (ET.ParseError, KeyError, ValueError) as exc:
        raise BadNotification(f"malformed pull DP notification: {exc!r}") from exc


class PullDPNotify(msgspec.Struct, frozen=True):
    """``SMS_PullDPNotification`` + ``NotifyPullDP``: the pull DP stores the notification
    (it survives a restart, as WMI keeps it) and starts the job; answers True."""

    pkg_id: str
    version: int
    notification: str  # the XML


class PullDPHolds(msgspec.Struct, frozen=True):
    """The status poll: does the pull DP hold the version whole? Answers a bool."""

    pkg_id: str
    version: int
