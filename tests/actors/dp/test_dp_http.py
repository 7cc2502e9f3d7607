"""The content server: a DP's files by their version's manifest, range requests, the
signature levels, and 404 for anything else (``..``, encoded separators, another DP's
share, a version the DP does not hold); the notification XML and .TZ bundle both ways."""

from __future__ import annotations

import random
from pathlib import Path

import aiohttp
import msgspec
import pytest
from yarl import URL

from actors.dp import (
    ChunkSlice,
    ContentServer,
    PackageInfoBundle,
    PullContent,
    PullLocation,
    PullNotification,
    SuperSignature,
    bundle_bytes,
    notification_xml,
    parse_notification,
    read_bundle,
)
from actors.errors import BadNotification
from contentlib import ContentLibrary


async def _library(root: Path, files: dict[str, bytes]) -> ContentLibrary:
    src = root / "src"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    lib = await ContentLibrary.open(root / "lib")
    await lib.snapshot("P0100001", src, "P0100001.1")
    return lib


async def test_files_ranges_signatures_and_refusals(tmp_path: Path) -> None:
    data = random.Random(5).randbytes(200_000)
    lib = await _library(tmp_path, {"a/b.bin": data})
    async with ContentServer.open() as server, aiohttp.ClientSession() as http:
        server.serve("P01DP1.CONTOSO.COM", lib)
        url = server.locate(server.content_url("p01dp1.contoso.com", "P0100001.1"))
        async with http.get(f"{url}/a/b.bin") as r:
            assert r.status == 200
            assert await r.read() == data
        async with http.get(f"{url}/a/b.bin", headers={"Range": "bytes=1000-1999"}) as r:
            assert r.status == 206
            assert await r.read() == data[1000:2000]
        sig_url = url.replace("SMS_DP_SMSPKG$", "SMS_DP_SMSSIG$")
        async with http.get(f"{sig_url}/a/b.bin?level=2") as r:
            supers = msgspec.msgpack.decode(await r.read(), type=SuperSignature)
        assert sum(supers.lengths) == len(data)
        async with http.get(f"{sig_url}/a/b.bin?chunks=0-2") as r:
            (part,) = msgspec.msgpack.decode(await r.read(), type=list[ChunkSlice])
        assert (part.start, len(part.lengths), len(part.hashes)) == (0, 2, 32)
        base = server.base_url
        for bad in (
            f"{url}/a/../a/b.bin",
            f"{url}/a%2Fb.bin",
            f"{url}/nope.bin",
            f"{base}/P01DP1.CONTOSO.COM/SMS_DP_SMSPKG$/P0100001.2/a/b.bin",
            f"{base}/PS1DP1.CONTOSO.COM/SMS_DP_SMSPKG$/P0100001.1/a/b.bin",
        ):
            async with http.get(URL(bad, encoded=True)) as r:  # sent as written
                assert r.status == 404, bad
        async with http.get(f"{sig_url}/a/b.bin?chunks=5-2") as r:
            assert r.status == 400


def test_notification_and_bundle_round_trip_and_refusals() -> None:
    n = PullNotification(
        pkg_id="P0100001",
        version=3,
        action="redist",
        allow_fallback=True,
        package_size=5532,
        hash="AB" * 32,
        contents=(
            PullContent(
                "P0100001.3",
                (
                    PullLocation("http://P01DP2.CONTOSO.COM/SMS_DP_SMSPKG$/P0100001.3", 2, "B"),
                    PullLocation("http://P01DP1.CONTOSO.COM/SMS_DP_SMSPKG$/P0100001.3", 1, "A"),
                ),
            ),
        ),
    )
    xml = notification_xml(n)
    assert '<PullDPPackageNotification PackageID="P0100001" Version="3" Action="redist"' in xml
    back = parse_notification(xml)
    assert [loc.source for loc in back.contents[0].locations] == ["A", "B"]  # by rank
    for bad in ("<x/>", "not xml", xml.replace('Action="redist"', 'Action="drop"')):
        with pytest.raises(BadNotification):
            parse_notification(bad)
    bundle = PackageInfoBundle("P0100001", 3, ())
    data, digest = bundle_bytes(bundle)
    assert read_bundle(data, digest) == bundle
    with pytest.raises(BadNotification, match="hash"):
        read_bundle(data + b"x", digest)
