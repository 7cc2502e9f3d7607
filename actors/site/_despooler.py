"""Despooler (``SMS_DESPOOLER``): instructions and package files that other sites sent.

It takes ready instructions (``.SNI``) in ``despoolr.box/receive`` when a sender says it
renamed one in (the hierarchy's :class:`ShareWatch`, the file system's change
notification, naming the file), and polls the folder as the safety net: every
``despooler_poll_interval`` when nothing watches it, ``_WATCHED_POLL`` times that when
something does (a short poll at every site of a busy hierarchy cost more than the
despooling: each listing is system calls on the event loop's thread). It runs at most
``despooling_threads`` at once. Each: the
signature is checked with the sending site's public key (DRS brought it) and the package
file against the signed hash; anything unsigned, forged or tampered is refused (4405),
kept aside in ``receive/refused`` and nothing is written. A DLT whose base version this
site's library does not hold (cleaned, damaged, never received) is refused the same way,
and the site's Type 1 status row says Failed in the same commit: DRS takes that to the
package's source site, whose DistMgr sends the whole package (PCK) instead. When the
package's row for that version has not replicated here yet, error 12 (4404): the
instruction is retried after ``despooler_retry_delay`` (the reference's race). Otherwise
the package file goes into the site's content library; ``SMSPackages_L`` says so (its
trigger wakes DistMgr), the site's Type 1 status row is Installed and 4400 is raised, in
one commit. When the instruction's final site is further down, the package file is kept
in ``SMSPKG`` and a mini-job sends it on, with the package's priority. Every step is
idempotent: a kill anywhere, and the instruction is despooled again.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path

import anyio
import anyio.lowlevel

from actors import addresses
from actors._crashpoints import crash_point
from actors.site._instruction import BadInstruction, Instruction, decode, verify
from actors.site._keyed import KeyedLocks
from actors.site._paths import package_file, receive_box, release_package_file
from actors.site._sharewatch import ShareWatch
from actors.site.messages import PACKAGE_CHANGED_TOPIC, MiniJobCreated, PackageChanged
from actors.sitedb import SiteDatabase, ops, product_time
from actors.status import ATTR_PACKAGE_ID, CMTraceLog, Component, StatusReporter
from contentlib import ContentLibError, ContentLibrary, MissingBaseVersion, hash_file

__all__ = ["Despooler"]

ERROR_NOT_ARRIVED = 12
_MTIME_TRUST = 200_000_000  # ns: an older folder modification time is final
_WATCHED_POLL = 32  # a watched box's safety-net poll: every 32 poll intervals


class Despooler(Component):
    """``<SITE>/Despooler``."""

    def __init__(
        self,
        *,
        site: str,
        server: str,
        db: SiteDatabase,
        library: ContentLibrary,
        reporter: StatusReporter,
        server_root: Path,
        threads: int,
        poll_interval: float,
        retry_delay: float,
        next_hop: Callable[[str], str],
        watch: ShareWatch | None = None,
        log: CMTraceLog | None = None,
    ) -> None:
        self.site = site
        self.server = server
        self.db = db
        self.library = library
        self.reporter = reporter
        self.server_root = server_root
        self.box = receive_box(server_root)
        self.threads = threads
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self._next_hop = next_hop
        self.trace_log = log
        self._limiter = anyio.CapacityLimiter(threads)
        self._busy: set[str] = set()
        self._not_before: dict[str, float] = {}
        self._listed: int | None = None  # the folder's modification time when last listed
        self._watch = watch
        self._unwatch: Callable[[], None] | None = None
        self._wake = anyio.Event()
        self._look = True  # list the folder at the next pass, whatever its time says
        self._arrived: set[str] = set()  # .SNI names a watcher reported, not yet taken
        self._locks: KeyedLocks[str] = KeyedLocks()  # a package's instructions
        self._thread_ids = itertools.count(0xEE8)  # numbered as the product's log shows one
        self.despooled = 0
        self.refused = 0
        self.retries = 0

    async def on_start(self) -> None:
        if self._watch is not None and self._unwatch is None:
            self._unwatch = self._watch.watch(self.box, self._woken)
        self.start_task(self._poll)

    async def on_stop(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def _woken(self, name: str) -> None:
        """A sender renamed ``name`` in: take it now (no listing needed)."""
        if name.endswith(".SNI"):
            self._arrived.add(name)
            self._wake.set()

    async def _poll(self) -> None:
        # Unwatched, the poll is all there is: it keeps the configured pace.
        interval = self.poll_interval * (1 if self._watch is None else _WATCHED_POLL)
        timed_out = True  # the first pass lists the folder
        async with anyio.create_task_group() as tg:
            while True:
                self._wake = anyio.Event()
                for sni in self._ready(listing=timed_out):
                    self._busy.add(sni.name)
                    tg.start_soon(self._despool_thread, sni)
                timed_out = await self._sleep(interval)

    async def _sleep(self, seconds: float) -> bool:
        """Until woken, the next retry is due, or ``seconds`` have passed (True: not woken)."""
        if self._not_before:
            seconds = min(seconds, min(self._not_before.values()) - self.clock.now())
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return True
        timer = self.clock.call_later(seconds, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()
        return not self._arrived

    def _ready(self, *, listing: bool) -> list[Path]:
        """The instructions to take now, in the event loop (a worker thread hop per poll
        cost more than the work, at every site every few clock seconds): those a watcher
        named, and those a listing of the folder finds. The folder is listed by the safety
        net's poll (``listing``) when it changed since the last listing (a modification time
        younger than ``_MTIME_TRUST`` is not trusted: the file system's clock is coarse, a
        file renamed in within the same tick leaves it unchanged), at start, after a
        despooling thread failed, or when a retry is due; a busy box is not listed once
        per instruction (each listing is system calls on the event loop's thread)."""
        now = self.clock.now()
        names, self._arrived = self._arrived, set()
        if listing or self._look or any(when <= now for when in self._not_before.values()):
            names |= self._listed_names(now)
        ready = []
        for name in sorted(names):
            if name in self._busy:
                continue
            when = self._not_before.get(name)
            if when is not None:
                if when > now:
                    continue
                del self._not_before[name]
            ready.append(self.box / name)
        return ready

    def _listed_names(self, now: float) -> set[str]:
        try:
            mtime = os.stat(self.box).st_mtime_ns
        except FileNotFoundError:
            return set()
        if (
            not self._look
            and mtime == self._listed
            and time.time_ns() - mtime > _MTIME_TRUST
            and not any(when <= now for when in self._not_before.values())
        ):
            return set()
        self._listed, self._look = mtime, False
        with os.scandir(self.box) as entries:
            names = {e.name for e in entries if e.name.endswith(".SNI")}
        for gone in self._not_before.keys() - names:
            del self._not_before[gone]  # taken away meanwhile: no retry to wait for
        return names

    async def _despool_thread(self, sni: Path) -> None:
        try:
            self.trace(f"~Found ready instruction {sni.name.lower()}")
            self.trace(
                f"~Used {self.threads - int(self._limiter.available_tokens)} out of"
                f" {self.threads} despooling threads"
            )
            async with self._limiter:
                self.trace(f"~Created a new despooling thread {next(self._thread_ids):X}")
                await self._despool(sni)
        except BaseException:
            self._look = True  # the next poll lists again: the instruction may still be there
            raise
        finally:
            self._busy.discard(sni.name)

    async def _despool(self, sni: Path) -> None:
        pck = sni.with_suffix(".PCK")
        try:
            # One worker thread hop: the instruction, and the package file's hash it is
            # checked against once its signature is.
            data, digest = await anyio.to_thread.run_sync(_read_and_hash, sni, pck)
            instruction, signed = decode(data)
            self.trace(f"~Verifying signature for instruction {sni} of type {instruction.type}")
            key = await self.db.site_key(instruction.sender_site)
            if key is None:
                # The sending site's certificate has not replicated yet: like error 12.
                await self._retry_later(sni, instruction, "the sending site's key")
                return
            verify(signed, key)
            self.trace(
                "~Signature checked out OK for instruction coming from site"
                f" {instruction.sender_site}, proceed with the instruction execution."
            )
            if instruction.dest_site != self.site:
                raise BadInstruction(f"addressed to site {instruction.dest_site}")
            if digest != instruction.package_sha256:
                raise BadInstruction(f"package file {pck.name} does not match its signed hash")
        except (BadInstruction, OSError) as exc:
            await self._refuse(sni, pck, str(exc))
            return
        await self._execute(sni, pck, instruction)

    async def _execute(self, sni: Path, pck: Path, ins: Instruction) -> None:
        # One instruction of a package at a time: two sends of one version (one for this
        # site, one to forward) store it once.
        async with self._locks.hold(ins.pkg_id):
            await self._execute_locked(sni, pck, ins)

    async def _execute_locked(self, sni: Path, pck: Path, ins: Instruction) -> None:
        pkg_id, version = ins.pkg_id, ins.version
        self.trace(f"~Executing instruction of type {ins.type}")
        stored = package_file(self.server_root, pkg_id, version, ins.base_version)
        self.trace(
            f"~Received package {pkg_id} version {version}. Compressed file -  {stored} as {pck}"
        )
        pkg = await self.db.package(pkg_id)
        self.trace(f" ~Old package storedUNC path is {pkg.stored_pkg_path if pkg else ''}.")
        if pkg is None or pkg.source_version < version:
            await self._retry_later(sni, ins, "the package row")
            return
        if pkg.stored_pkg_version < version:
            self.trace(f"Uncompressing {stored} to {stored}.temp")
            self.trace(f"Content Library: {self.library.root}")
            self.trace(f"Extracting package {pkg_id}")
            try:
                if ins.base_version:  # the changes from the version this site holds
                    manifest = await self.library.add_from_dlt(pck)
                else:
                    manifest = await self.library.add_from_pck(pck)
            except MissingBaseVersion as exc:
                await self._refuse(sni, pck, f"package file {pck.name}: {exc}", base=ins)
                return
            except ContentLibError as exc:
                await self._refuse(sni, pck, f"package file {pck.name}: {exc}")
                return
            self.trace(f"Extracting content {manifest.content_id}")
            self.trace(f"Writing package definition for {pkg_id}")
            self.trace(
                f"~Package {pkg_id} (version {pkg.stored_pkg_version}) exists in the"
                f" distribution source, save the newer version (version {version})."
            )
            crash_point("despooler.extracted")
            await self._commit(ins, stored)
        forward = ins.final_site != self.site
        if forward:
            await self._forward(ins, pck, stored, pkg.priority)
        await anyio.to_thread.run_sync(_remove, (sni, pck))
        self.trace("~Despooler successfully executed one instruction.")
        self.despooled += 1
        await self.publish(PACKAGE_CHANGED_TOPIC, PackageChanged(pkg_id))

    async def _commit(self, ins: Instruction, stored: Path) -> None:
        now = product_time(self.clock.wall())
        pkg_id, version, site, server = ins.pkg_id, ins.version, self.site, self.server

        def op(conn: sqlite3.Connection) -> None:
            if not ops.despooled(
                conn,
                pkg_id=pkg_id,
                version=version,
                site_code=site,
                server=server,
                stored_path=str(stored),
                now=now,
            ):
                raise _StoredAlready  # rolls 4400 back with it

        self.trace(f"~Stored Package {pkg_id}. Stored Package Version = {version}")
        with suppress(_StoredAlready):
            await self.reporter.report(
                4400, (pkg_id, str(stored)), {ATTR_PACKAGE_ID: pkg_id}, op=op
            )

    async def _forward(self, ins: Instruction, pck: Path, stored: Path, priority: int) -> None:
        """Keep the package file for the sites below and send it on, one hop down."""
        if await self.db.minijob_for(ins.pkg_id, ins.version, ins.final_site) is not None:
            return  # forwarded already (a second run of this instruction)
        # Our own reference while the file is kept and handed over (as DistMgr takes
        # one): a send of the same file completing meanwhile cannot delete it under us.
        root = str(stored)
        await self.db.write(lambda conn: ops.add_package_file_ref(conn, root))
        await anyio.to_thread.run_sync(_keep, pck, stored)
        hop = self._next_hop(ins.final_site)
        now = product_time(self.clock.wall())

        def hand_over(conn: sqlite3.Connection) -> int | None:
            job = ops.insert_minijob(
                conn,
                pkg_id=ins.pkg_id,
                version=ins.version,
                dest_site=hop,
                final_site=ins.final_site,
                transfer_root=root,
                priority=priority,
                size=ins.package_size,
                now=now,
            )
            release_package_file(conn, root)  # ours: the mini-job holds the file now
            return job

        job_id = await self.db.write(hand_over)
        if job_id is not None:
            self.trace(
                f"~Created minijob to send compressed copy of package {ins.pkg_id} to site"
                f" {ins.final_site}.  Transfer root = {stored}."
            )
            await self.send(addresses.scheduler(self.site), MiniJobCreated(job_id))

    async def _retry_later(self, sni: Path, ins: Instruction, what: str) -> None:
        self.trace(
            f"~This package[{ins.pkg_id}]'s information hasn't arrived yet for this version"
            f" [{ins.version}]. Retry later ..."
        )
        self.trace(f"~Created retry instruction for job {ins.job_id:08X}")
        self.trace(
            f"~Despooler failed to execute the instruction, error code = {ERROR_NOT_ARRIVED}"
        )
        await self.reporter.report(
            4404,
            (ins.pkg_id, str(ins.version), str(ERROR_NOT_ARRIVED)),
            {ATTR_PACKAGE_ID: ins.pkg_id},
        )
        when = self.clock.now() + self.retry_delay
        self._not_before[sni.name] = when
        self._wake.set()  # the poll's sleep ends by then
        self.retries += 1
        later = self.clock.wall() + dt.timedelta(seconds=self.retry_delay)
        self.trace(
            f"~Instruction {sni} won't be processed till {product_time(later)}"
            f" ({what} has not arrived)"
        )

    async def _refuse(
        self, sni: Path, pck: Path, reason: str, *, base: Instruction | None = None
    ) -> None:
        """4405, the files kept aside, nothing written to the library. ``base``: a DLT
        whose base version is not here; the site's Type 1 row says Failed with 4405, so
        the source site sends the whole package."""
        self.refused += 1
        aside = self.box / "refused"
        await anyio.to_thread.run_sync(_set_aside, aside, (sni, pck))
        self.trace(f"~Refused instruction {sni.name}: {reason}", severity="E")
        op: Callable[[sqlite3.Connection], None] | None = None
        attributes: dict[int, str] = {}
        if base is not None:
            self.trace(
                f"~This site does not hold version {base.base_version} of package"
                f" {base.pkg_id}, the base of the changes it was sent: site {self.site} needs"
                f" the compressed package for version {base.version}."
            )
            attributes[ATTR_PACKAGE_ID] = base.pkg_id
            op = partial(
                ops.site_lacks_base,
                pkg_id=base.pkg_id,
                site_code=self.site,
                server=self.server,
                now=product_time(self.clock.wall()),
            )

        await self.reporter.report(4405, (sni.name, _sender_of(sni), reason), attributes, op=op)


class _StoredAlready(Exception):
    """Raised inside the despooler's commit: that version is stored here already."""


def _sender_of(sni: Path) -> str:
    """The sending site, as the send request ID ends with it (``202SQCS1``)."""
    stem = sni.stem
    return stem.split("SQ", 1)[1] if "SQ" in stem else ""


def _read_and_hash(sni: Path, pck: Path) -> tuple[bytes, str]:
    return sni.read_bytes(), hash_file(pck)[0]


def _keep(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of ``src`` (whole or not at all): a second name for the same
    file when both are on one file system (the sender synced its bytes), else a synced
    copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, dst)


def _remove(paths: tuple[Path, ...]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _set_aside(aside: Path, paths: tuple[Path, ...]) -> None:
    aside.mkdir(parents=True, exist_ok=True)
    for p in paths:
        if p.exists():
            os.replace(p, aside / p.name)
