"""The content server: a DP's files by their version's manifest, range requests, the
signature levels, and 404 for anything else (``..``, encoded separators, another DP's
share, a version the DP does not hold); the notification XML and .TZ bundle both ways."""

from __future__ import annotations

import random
from pathlib import Path

import aiohttp
import msgspec
import pytest
import zstandard
from yarl import URL

from actors.dp import (
    BLOCK,
    LEVEL_BLOCK,
    LEVEL_CHUNK,
    LEVEL_GROUP,
    LEVEL_SUPER,
    ContentServer,
    DataAsk,
    Level,
    PackageInfoBundle,
    PullContent,
    PullLocation,
    PullNotification,
    SigAsk,
    SigTree,
    block_hashes,
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
        tree = SigTree(await lib.signature(lib.manifest("P0100001.1").files[0].sha256))
        supers = await _levels(http, sig_url, [SigAsk("a/b.bin", LEVEL_SUPER)])
        assert sum(supers[0].lengths) == len(data)
        assert supers[0] == tree.inside(LEVEL_SUPER, [])
        # the groups of the first super-chunk, the chunks of its first group, the blocks
        first = (0, supers[0].lengths[0])
        groups = await _levels(http, sig_url, [SigAsk("a/b.bin", LEVEL_GROUP, (first,))])
        assert sum(groups[0].lengths) == first[1]
        assert len(groups[0].hashes) == 8 * len(groups[0].lengths)
        group = (0, groups[0].lengths[0])
        chunks, blocks = await _levels(
            http,
            sig_url,
            [SigAsk("a/b.bin", LEVEL_CHUNK, (group,)), SigAsk("a/b.bin", LEVEL_BLOCK, ((5, 600),))],
        )
        assert sum(chunks.lengths) == group[1]
        assert chunks == tree.inside(LEVEL_CHUNK, [group])
        assert blocks == Level((), block_hashes(data[5:600]))
        assert len(blocks.hashes) == 4 * -(-595 // BLOCK)
        # many files' ranges in one answer, in the order asked
        asks = [DataAsk("a/b.bin", ((10, 20), (150_000, 150_100))), DataAsk("a/b.bin", ((0, 3),))]
        async with http.post(url, data=msgspec.msgpack.encode(asks)) as r:
            assert r.status == 200
            assert await r.read() == data[10:20] + data[150_000:150_100] + data[:3]
        for bad_ask, status in (
            ([DataAsk("a/b.bin", ((20, 10),))], 400),  # not a range
            ([DataAsk("a/b.bin", ((0, len(data) + 1),))], 400),  # past the end
            ([DataAsk("a/b.bin", ((50, 60), (0, 10)))], 400),  # out of order
            ([DataAsk("../b.bin", ((0, 1),))], 404),  # no such file in the manifest
        ):
            async with http.post(url, data=msgspec.msgpack.encode(bad_ask)) as r:
                assert r.status == status, bad_ask
        async with http.post(sig_url, data=b"not msgpack") as r:
            assert r.status == 400
        too_long = [SigAsk("a/b.bin", LEVEL_BLOCK, ((0, 100_000),))]
        async with http.post(sig_url, data=msgspec.msgpack.encode(too_long)) as r:
            assert r.status == 400
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


async def _levels(http: aiohttp.ClientSession, url: str, asks: list[SigAsk]) -> list[Level]:
    async with http.post(url, data=msgspec.msgpack.encode(asks)) as r:
        assert r.status == 200
        return msgspec.msgpack.decode(await r.read(), type=list[Level])


async def test_compressible_files_and_ranges_travel_zstd_encoded(tmp_path: Path) -> None:
    text = b"".join(b"line %d of a text file\n" % i for i in range(20_000))
    noise = random.Random(6).randbytes(100_000)
    lib = await _library(tmp_path, {"t.txt": text, "n.bin": noise})
    async with ContentServer.open() as server, aiohttp.ClientSession() as http:
        server.serve("P01DP1.CONTOSO.COM", lib)
        url = server.locate(server.content_url("P01DP1.CONTOSO.COM", "P0100001.1"))
        zstd = {"Accept-Encoding": "zstd"}
        async with http.get(f"{url}/t.txt", headers=zstd, auto_decompress=False) as r:
            assert (r.status, r.headers["Content-Encoding"]) == (200, "zstd")
            raw = await r.read()
        assert len(raw) < len(text) // 5
        assert zstandard.ZstdDecompressor().decompressobj().decompress(raw) == text
        ranged = {**zstd, "Range": "bytes=1000-60999"}
        async with http.get(f"{url}/t.txt", headers=ranged, auto_decompress=False) as r:
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes 1000-60999/{len(text)}"
            raw = await r.read()
        assert zstandard.ZstdDecompressor().decompressobj().decompress(raw) == text[1000:61000]
        async with http.get(f"{url}/n.bin", headers=zstd, auto_decompress=False) as r:
            assert "Content-Encoding" not in r.headers  # random bytes go as they are
            assert await r.read() == noise
        async with http.get(f"{url}/t.txt", auto_decompress=False) as r:
            assert "Content-Encoding" not in r.headers  # only to a client that accepts it
            assert await r.read() == text


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
