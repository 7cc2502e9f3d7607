"""PCK and DLT package files: standard tar+zstd, verified, all-or-nothing."""

from __future__ import annotations

import io
import os
import random
import subprocess
import tarfile
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec
import pytest
import zstandard as zstd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.testing import read_tree
from contentlib import (
    ContentLibError,
    ContentLibrary,
    CorruptPackageFile,
    HashMismatch,
    MissingBaseVersion,
    UnsafePath,
)
from tests.contentlib.contentlib_helpers import listing, make_tree

V1 = {
    "app/setup.exe": random.Random(1).randbytes(200_000),
    "app/lib.dll": random.Random(2).randbytes(50_000),
    "docs/readme.txt": b"version 1\n" * 100,
    "docs/copy.txt": b"version 1\n" * 100,
    "old/gone.txt": b"removed in v2",
}


def v2_of(v1: dict[str, bytes]) -> dict[str, bytes]:
    v2 = dict(v1)
    del v2["old/gone.txt"]
    exe = v1["app/setup.exe"]
    v2["app/setup.exe"] = exe[:1000] + b"patched" + exe[1000:]
    v2["docs/readme.txt"] = b"version 2\n" + v1["docs/readme.txt"]
    v2["new/added.bin"] = random.Random(4).randbytes(3000)
    return v2


async def two_versions(tmp_path: Path) -> ContentLibrary:
    site = ContentLibrary(tmp_path / "site")
    src = make_tree(tmp_path / "src1", V1)
    await site.snapshot("CS100026", src, "CS100026.1")
    await site.snapshot("CS100026", make_tree(tmp_path / "src2", v2_of(V1)), "CS100026.2")
    return site


async def test_pck_round_trip_and_tar_lists_it(tmp_path: Path) -> None:
    site = await two_versions(tmp_path)
    pck = tmp_path / "CS100026.PCK.1"
    await site.write_pck("CS100026.1", pck)
    names = await anyio.to_thread.run_sync(_tar_list, pck)
    assert names[0] == "manifest.json"
    assert sorted(names[1:]) == sorted(f"files/{h}" for h in site.manifest("CS100026.1").hashes())
    dp = ContentLibrary(tmp_path / "dp")
    m = await dp.add_from_pck(pck)
    assert m == site.manifest("CS100026.1")
    await dp.extract("CS100026.1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == V1
    assert await dp.add_from_pck(pck) == m  # idempotent


async def test_dlt_moves_little_and_rebuilds_next_version(tmp_path: Path) -> None:
    site = await two_versions(tmp_path)
    pck, dlt = tmp_path / "p.PCK", tmp_path / "p.DLT"
    await site.write_pck("CS100026.1", pck)
    await site.write_dlt("CS100026.1", "CS100026.2", dlt)
    assert dlt.stat().st_size < 5000 < pck.stat().st_size
    assert (await anyio.to_thread.run_sync(_tar_list, dlt))[0] == "delta.json"
    dp = ContentLibrary(tmp_path / "dp")
    with pytest.raises(MissingBaseVersion, match=r"CS100026\.1"):
        await dp.add_from_dlt(dlt)
    await dp.add_from_pck(pck)
    m2 = await dp.add_from_dlt(dlt)
    assert m2 == site.manifest("CS100026.2")
    await dp.extract("CS100026.2", tmp_path / "out")
    assert read_tree(tmp_path / "out") == v2_of(V1)
    assert (await dp.verify("CS100026.2")).ok


def _tar_list(path: Path) -> list[str]:
    out = subprocess.run(["tar", "--zstd", "-tf", str(path)], capture_output=True, check=True)
    return out.stdout.decode().split()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _flip_inner_byte(path: Path) -> None:
    """Tamper with one byte of a stored file, then recompress: the zstd frame is valid."""
    raw = bytearray(zstd.ZstdDecompressor().stream_reader(path.read_bytes()).read())
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        last = [m for m in tar.getmembers() if m.size][-1]
    raw[last.offset_data + last.size // 2] ^= 0xFF
    path.write_bytes(zstd.ZstdCompressor().compress(bytes(raw)))


@pytest.mark.parametrize(
    ("damage", "error"), [(_truncate, CorruptPackageFile), (_flip_inner_byte, HashMismatch)]
)
@pytest.mark.parametrize("kind", ["pck", "dlt"])
async def test_damaged_package_file_leaves_library_as_it_was(
    tmp_path: Path, damage: object, error: type[Exception], kind: str
) -> None:
    site = await two_versions(tmp_path)
    pck, dlt = tmp_path / "p.PCK", tmp_path / "p.DLT"
    await site.write_pck("CS100026.1", pck)
    await site.write_dlt("CS100026.1", "CS100026.2", dlt)
    dp = ContentLibrary(tmp_path / "dp")
    target = pck
    if kind == "dlt":
        await dp.add_from_pck(pck)
        target = dlt
    damage(target)  # type: ignore[operator]
    before = listing(tmp_path / "dp")
    with pytest.raises(error):
        await (dp.add_from_pck(target) if kind == "pck" else dp.add_from_dlt(target))
    assert listing(tmp_path / "dp") == before


def _tar_zst(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    path.write_bytes(zstd.ZstdCompressor().compress(buf.getvalue()))


def _info(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    return info


@pytest.mark.parametrize(
    "evil",
    [
        _info("../escape", b"x"),
        _info("/etc/evil", b"x"),
        _info("files/../../x", b"x"),
        _info("files/link", kind=tarfile.SYMTYPE),
        _info("files/dev", kind=tarfile.CHRTYPE),
    ],
    ids=["dotdot", "absolute", "nested-dotdot", "symlink", "device"],
)
async def test_malicious_tar_entries_are_refused(tmp_path: Path, evil: tarfile.TarInfo) -> None:
    site = await two_versions(tmp_path)
    manifest = msgspec.json.encode(site.manifest("CS100026.1"))
    bad = tmp_path / "evil.PCK"
    _tar_zst(bad, [(_info("manifest.json", manifest), manifest), (evil, b"x")])
    dp = ContentLibrary(tmp_path / "dp")
    before = listing(tmp_path)
    with pytest.raises(UnsafePath):
        await dp.add_from_pck(bad)
    assert listing(tmp_path) == before


async def test_manifest_with_escaping_path_is_refused(tmp_path: Path) -> None:
    site = await two_versions(tmp_path)
    m = site.manifest("CS100026.1")
    f0 = m.files[0]
    evil = msgspec.structs.replace(m, files=(msgspec.structs.replace(f0, path="../../evil"),))
    data = msgspec.json.encode(evil)
    bad = tmp_path / "evil.PCK"
    _tar_zst(bad, [(_info("manifest.json", data), data)])
    dp = ContentLibrary(tmp_path / "dp")
    with pytest.raises(UnsafePath, match="evil"):
        await dp.add_from_pck(bad)
    with pytest.raises(UnsafePath):
        await dp.add_content(evil)


async def test_not_a_package_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.PCK"
    bad.write_bytes(b"plain text, no zstd")
    with pytest.raises(CorruptPackageFile, match=r"x\.PCK"):
        await ContentLibrary(tmp_path / "dp").add_from_pck(bad)
    with pytest.raises(ContentLibError):
        await ContentLibrary(tmp_path / "dp").add_from_pck(tmp_path / "missing.PCK")


_names = st.text(alphabet="abcdefghij0123456789-_. ", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)
_trees = st.dictionaries(
    st.lists(_names, min_size=1, max_size=3).map("/".join),
    st.binary(max_size=3000),
    max_size=8,
).filter(
    # a name cannot be both a file and a folder
    lambda t: not any(a != b and b.startswith(a + "/") for a in t for b in t)
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=_trees)
async def test_pck_round_trips_any_tree(tmp_path: Path, tree: dict[str, bytes]) -> None:
    run = tmp_path / os.urandom(4).hex()
    site = ContentLibrary(run / "site")
    await site.snapshot("CS100026", make_tree(run / "src", tree), "CS100026.1")
    await site.write_pck("CS100026.1", run / "p.PCK")
    dp = ContentLibrary(run / "dp")
    await dp.add_from_pck(run / "p.PCK")
    await dp.extract("CS100026.1", run / "out")
    assert read_tree(run / "out") == tree


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(trees=st.lists(_trees, min_size=1, max_size=4))
async def test_single_instance_across_packages(
    tmp_path: Path, trees: list[dict[str, bytes]]
) -> None:
    run = tmp_path / os.urandom(4).hex()
    lib = ContentLibrary(run / "lib")
    for i, tree in enumerate(trees):
        await lib.snapshot(f"CS10000{i}", make_tree(run / f"s{i}", tree), f"CS10000{i}.1")
    distinct = {data for tree in trees for data in tree.values()}
    stored = [p.read_bytes() for p in (run / "lib" / "FileLib").glob("*/*")]
    assert sorted(stored) == sorted(distinct)


async def test_empty_folders_travel_in_pck_and_dlt(tmp_path: Path) -> None:
    site = ContentLibrary(tmp_path / "site")
    src = make_tree(tmp_path / "src", V1)
    (src / "logs").mkdir()
    await site.snapshot("CS100026", src, "CS100026.1")
    (src / "logs").rmdir()
    (src / "cache" / "empty").mkdir(parents=True)
    await site.snapshot("CS100026", src, "CS100026.2")
    pck, dlt = tmp_path / "p.PCK", tmp_path / "p.DLT"
    await site.write_pck("CS100026.1", pck)
    await site.write_dlt("CS100026.1", "CS100026.2", dlt)
    dp = ContentLibrary(tmp_path / "dp")
    assert (await dp.add_from_pck(pck)).dirs == ("logs",)
    assert (await dp.add_from_dlt(dlt)).dirs == ("cache/empty",)
    await dp.extract("CS100026.2", tmp_path / "out")
    assert (tmp_path / "out" / "cache" / "empty").is_dir()
    assert not (tmp_path / "out" / "logs").exists()
