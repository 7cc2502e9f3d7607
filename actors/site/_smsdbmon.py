"""SMSDBMON: trigger rows in, bus messages out, in commit order, each once.

It reads ``TableChangeNotifications`` rows with ``RowID`` above its position (RowID order
is commit order: every write goes through the site's single writer), turns each into a
message (:mod:`actors.site.messages`) for DistMgr or PkgXferMgr, and logs the reference's
``RCV:`` / ``SND:`` lines to ``smsdbmon.log``. It is woken at once by every commit of the
writer in this process that leaves a row above its position (the writer tells it the
highest RowID after each commit, so a commit without one costs no read), and by a slow
safety poll on the clock for anything else.

Exactly once, and why
---------------------
A notification counts as delivered when the destination's mailbox accepted it: ``send``
returned. The bus never enqueues a send that was cancelled, and there is no await between
``send`` returning and the in-memory position moving past that row, so a kill (a
cancellation: ``stop_actor``, a restart after a failure, the bus stopping) lands either
before the message was accepted (it will be sent again) or after the position moved (it
will not). The position is saved to ``SmsDbMonPosition`` after each batch and once more in
``on_stop``, in the same transaction that deletes the delivered rows; a new instance reads
it back. So across a stop and restart, or an actor restart, nothing is skipped or repeated.

If the process dies outright, the mailboxes die with it and so do messages accepted since
the last saved position; those are delivered again after the restart (at least once).
That is the right side to err on: every message carries ``notification_id`` (increasing),
so a consumer that keeps durable state can drop an ID it has already acted on, and the
consumers' work is idempotent anyway (DistMgr re-reads the package's rows, PkgXferMgr the
job's).
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from actors import addresses
from actors.site.messages import (
    DistributionJobNotification,
    PackageNotification,
    PullResponseNotification,
    SmsDbMonNotification,
)
from actors.sitedb import SMSDBMON_CONSUMER, ChangeNotification, SiteDatabase, SiteDatabaseClosed
from actors.status import CMTraceLog, Component
from bus import UnknownAddress

__all__ = ["SmsDbMon"]


class SmsDbMon(Component):
    """SMS_DATABASE_NOTIFICATION_MONITOR of one site server.

    ``distmgr`` / ``pkgxfermgr`` are the destination addresses (default ``<SITE>/DistMgr``
    and ``<SITE>/PkgXferMgr``); ``server_root`` is the server's folder, used to name the
    inbox files in the log lines.
    """

    def __init__(
        self,
        db: SiteDatabase,
        *,
        site: str,
        server_root: str | Path = ".",
        distmgr: str | None = None,
        pkgxfermgr: str | None = None,
        poll_interval: float = 60.0,
        log: CMTraceLog | None = None,
        batch_size: int = 1000,
        consumer: str = SMSDBMON_CONSUMER,
    ) -> None:
        if poll_interval <= 0 or batch_size < 1:
            raise ValueError("poll_interval must be > 0 and batch_size >= 1")
        self.db = db
        self.site = site
        self.distmgr = distmgr or addresses.distmgr(site)
        self.pkgxfermgr = pkgxfermgr or addresses.pkgxfermgr(site)
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.consumer = consumer
        self.trace_log = log
        # inbox folders as strings: the log names a file per notification, keep that cheap
        inboxes = Path(server_root) / "inboxes"
        self._distmgr_box = f"{inboxes / 'distmgr.box'}{os.sep}"
        self._pulls_box = f"{inboxes / 'distmgr.box' / 'incoming'}{os.sep}"
        self._pkgxfer_box = f"{inboxes / 'PkgTransferMgr.box'}{os.sep}"
        self.position = 0  # RowID of the last notification delivered
        self._saved = 0  # ... and of the last one recorded in the database
        self.delivered = 0
        self._wake = anyio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    async def on_start(self) -> None:
        saved = await self.db.position(self.consumer)
        self._saved = max(self._saved, saved)
        self.position = max(self.position, saved)
        self.db.remove_notification_listener(self._on_commit)  # a restart must not add twice
        self.db.add_notification_listener(self._on_commit)
        self.start_task(self._monitor)
        self.start_task(self._poll)

    async def on_stop(self) -> None:
        self.db.remove_notification_listener(self._on_commit)
        try:
            await self._save_position()
        except SiteDatabaseClosed:
            self.log.warning(
                "%s: database closed before position %d was saved", self.address, self.position
            )
        if self.trace_log is not None:
            self.trace_log.flush()

    def _on_commit(self, last_row: int) -> None:
        if last_row > self.position:  # a commit without new rows for us needs no read
            self._wake.set()

    async def _poll(self) -> None:
        while True:
            await self.clock.sleep(self.poll_interval)
            self._wake.set()

    async def _monitor(self) -> None:
        while True:
            self._wake = anyio.Event()  # a commit from now on wakes the wait below
            await self._drain()
            await self._wake.wait()

    # -- delivery ------------------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            rows = await self.db.notifications_after(self.position, self.batch_size)
            if not rows:
                return
            lines: list[str] = []
            try:
                for n in rows:
                    if not await self._deliver(n, lines):
                        return  # destination not there yet: retry on the next wake-up
                    self.position = n.row_id  # no await since send returned (see above)
                    self.delivered += 1
            finally:
                if self.trace_log is not None and lines:
                    self.trace_log.write_lines(lines, when=self.clock.wall())
                await self._save_position()
            if len(rows) < self.batch_size:
                # All there was at the read: a row committed since has woken ``_monitor``
                # (its event is renewed before each drain), so no second, empty read.
                return

    async def _save_position(self) -> None:
        position = self.position
        if position > self._saved:
            with anyio.CancelScope(shield=True):
                await self.db.save_position(self.consumer, position)
            self._saved = max(self._saved, position)

    async def _deliver(self, n: ChangeNotification, lines: list[str]) -> bool:
        """Send one notification's message; its RCV/SND log lines go to ``lines``."""
        built = self._message(n)
        if built is None:
            self.log.error("%s: no rule %r for a %s row; skipped", self.address, n.rule, n.table)
            return True
        address, msg, dropped = built
        lines.append(f"RCV: {n.operation} on {n.table} for {n.rule} [{n.key}][{n.row_id}]")
        try:
            await self.send(address, msg)
        except UnknownAddress:
            self.log.warning("%s: %s is not running; will retry", self.address, address)
            return False
        lines.append(f"SND: Dropped {dropped} [{n.row_id}]")
        return True

    def _message(self, n: ChangeNotification) -> tuple[str, SmsDbMonNotification, str] | None:
        if n.rule == "PkgNotify_Add":
            pkg = PackageNotification(n.row_id, n.key, n.arg1, n.arg2, n.arg3)
            return self.distmgr, pkg, f"{self._distmgr_box}{n.key}.PKN"
        if n.rule == "DistributionJob_Creation":
            job = DistributionJobNotification(n.row_id, n.arg1, n.key, n.arg2, n.arg3, n.arg4)
            return self.pkgxfermgr, job, f"{self._pkgxfer_box}{n.key}.PKN"
        if n.rule == "PullDPResponse_UpdIns":
            pul = PullResponseNotification(
                n.row_id, int(n.key), n.key2, n.arg1, n.arg2, n.operation
            )
            return self.distmgr, pul, f"{self._pulls_box}{n.key}.PUL"
        return None
