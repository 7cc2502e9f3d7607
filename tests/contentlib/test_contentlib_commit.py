"""Group commit of manifests: concurrent commits share a sync, each is durable when it
returns, a failure is its caller's alone, and a cancelled caller never stalls the others."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from contentlib import ContentLibrary, _fs
from contentlib._commit import ManifestCommitter
from tests.contentlib.contentlib_helpers import make_tree


async def _thread(fn: object) -> None:
    await anyio.to_thread.run_sync(fn)  # type: ignore[arg-type]


def _committer(tmp_path: Path) -> tuple[ManifestCommitter, Path, Path]:
    datalib, pkglib = tmp_path / "DataLib", tmp_path / "PkgLib"
    datalib.mkdir()
    pkglib.mkdir()
    return ManifestCommitter(_thread), datalib, pkglib


async def test_concurrent_commits_share_batches_and_all_land(tmp_path: Path) -> None:
    committer, datalib, pkglib = _committer(tmp_path)
    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(
                committer.commit,
                datalib / f"P{i}.1.json",
                b"m%d" % i,
                (pkglib / f"P{i}.json", b"e"),
            )
    assert committer.manifests == 30
    assert committer.batches < 30  # the first writes alone, the rest wait and go together
    assert sorted(p.name for p in datalib.iterdir()) == sorted(f"P{i}.1.json" for i in range(30))
    assert (datalib / "P7.1.json").read_bytes() == b"m7"
    assert len(list(pkglib.iterdir())) == 30


async def test_a_failed_write_fails_its_caller_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committer, datalib, pkglib = _committer(tmp_path)
    real = _fs.write_file

    def write_file(path: Path, data: bytes) -> None:
        if data == b"bad":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(_fs, "write_file", write_file)
    outcome: dict[str, BaseException | None] = {}

    async def one(name: str, data: bytes) -> None:
        try:
            await committer.commit(datalib / f"{name}.json", data, (pkglib / f"{name}.json", b""))
        except OSError as e:
            outcome[name] = e
        else:
            outcome[name] = None

    async with anyio.create_task_group() as tg:
        for name, data in [("a.1", b"a"), ("b.1", b"bad"), ("c.1", b"c"), ("d.1", b"d")]:
            tg.start_soon(one, name, data)
    assert [outcome[n] for n in ("a.1", "c.1", "d.1")] == [None, None, None]
    assert isinstance(outcome["b.1"], OSError)
    assert sorted(os.listdir(datalib)) == ["a.1.json", "c.1.json", "d.1.json"]  # no temp left
    assert not (pkglib / "b.1.json").exists()


async def test_a_cancelled_caller_still_commits_and_passes_the_lead(tmp_path: Path) -> None:
    committer, datalib, pkglib = _committer(tmp_path)
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(committer.commit, datalib / f"P{i}.1.json", b"m", (pkglib / "x", b""))
        await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()  # every caller is mid-commit: none is torn, none stalls
    after = ManifestCommitter(_thread)
    with anyio.fail_after(5):
        await after.commit(datalib / "late.1.json", b"m", (pkglib / "y", b""))
    assert sorted(os.listdir(datalib)) == sorted(
        [*(f"P{i}.1.json" for i in range(5)), "late.1.json"]
    )


async def test_versions_committed_together_survive_a_reopen(tmp_path: Path) -> None:
    lib = await ContentLibrary.open(tmp_path / "lib")
    sources = [make_tree(tmp_path / f"src{i}", {"a.txt": b"x%d" % i}) for i in range(8)]
    async with anyio.create_task_group() as tg:
        for i, src in enumerate(sources):
            tg.start_soon(lib.snapshot, f"PS10000{i}", src, f"PS10000{i}.1")
    again = await ContentLibrary.open(tmp_path / "lib")
    assert again.package_ids() == [f"PS10000{i}" for i in range(8)]
    for i in range(8):
        assert (await again.verify(f"PS10000{i}.1")).ok


async def test_libraries_on_one_filesystem_share_their_syncs(tmp_path: Path) -> None:
    libs = [await ContentLibrary.open(tmp_path / f"lib{n}") for n in range(3)]
    sources = [make_tree(tmp_path / f"src{i}", {"a.txt": b"y%d" % i}) for i in range(12)]
    async with anyio.create_task_group() as tg:
        for i, src in enumerate(sources):
            tg.start_soon(libs[i % 3].snapshot, f"PS10000{i:X}", src, f"PS10000{i:X}.1")
    committer = libs[0]._committer
    assert committer is not None
    assert all(lib._committer is committer for lib in libs)  # one batch holds all three
    assert committer.manifests == 12
    for n in range(3):
        again = await ContentLibrary.open(tmp_path / f"lib{n}")
        assert again.package_ids() == [f"PS10000{i:X}" for i in range(n, 12, 3)]


async def test_commits_started_together_share_one_sync(tmp_path: Path) -> None:
    """A package's DPs finish together: their manifests go in one batch, not the first
    alone (its caller found no batch running) and the rest in a second one."""
    committer, datalib, pkglib = _committer(tmp_path)
    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(
                committer.commit, datalib / f"P{i}.1.json", b"m", (pkglib / f"P{i}.json", b"e")
            )
    assert committer.manifests == 4
    assert committer.batches == 1
