"""DRS: database replication between a site and its neighbours in the hierarchy.

Every change to replicated data (``SCOPES``) at a site lands, by trigger, in the site's
``DrsLog`` in commit order. This site's DRS sends its log to each neighbouring site (the
parent and the children: a secondary gets global data through its parent primary), each
record ``replication_delay`` seconds of clock time after DRS first saw it, in order, in
batches at most ``batch_interval`` (a quarter of the delay) apart per neighbour: a record
waits between the delay and the delay plus that interval, and a busy site sends a few
batches a second, not one per commit. The neighbour's DRS applies a batch in one commit
with its position for this site (:func:`actors.sitedb.ops.apply_replication`) and replies
with that position. A record the neighbour forwarded to us is never sent back to it, so a
change made at any site reaches every other site once, along the tree; *site data*
(``TableScope.site_data``: a site's status rows) goes only to the parent (up to the CAS)
and toward the package's source site.

Exactly once: the receiver skips records at or below its saved position (a batch sent
again after either side restarted), and the sender resends from the last position it
saved. That position is saved at most once a delay (and within a delay of the last
batch): a restart resends at most that much, which the receiver skips. DRS learns of new records
from the commit itself (the writer's commit probe), not from a read per commit. Nothing
else crosses: a site's DRS knows the other sites only by address.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from functools import partial

import anyio
import msgspec

from actors import addresses
from actors.drs._messages import ReplicationBatch
from actors.sitedb import SCOPES, ReplicationRecord, SiteDatabase, ops
from actors.status import CMTraceLog, Component
from bus import BusClosed, RequestTimeout, UnknownAddress, handler

__all__ = ["Drs"]


class Drs(Component):
    """``<SITE>/DRS``."""

    workers = 4  # batches from several neighbours at once (the writer orders them)
    reply_errors = (ValueError,)  # a batch from a site that is no neighbour is refused
    request_timeout = None  # applying is database work, not simulated network time

    def __init__(
        self,
        *,
        site: str,
        db: SiteDatabase,
        neighbours: tuple[str, ...],
        delay: float,
        parent: str | None = None,
        toward: Callable[[str], str | None] | None = None,
        retry_interval: float = 60.0,
        batch_size: int = 500,
        log: CMTraceLog | None = None,
    ) -> None:
        """``toward(site)``: the neighbour on the way to that site (None: this site, or
        none known); without it, site data goes only to the parent."""
        if delay < 0 or retry_interval <= 0 or batch_size < 1:
            raise ValueError("delay >= 0, retry_interval > 0 and batch_size >= 1")
        self.site = site
        self.db = db
        self.neighbours = neighbours
        self.parent = parent
        self._toward = toward or (lambda _site: None)
        self.delay = delay
        self.batch_interval = delay / 4
        self.retry_interval = retry_interval
        self.batch_size = batch_size
        self.trace_log = log
        # When DRS first saw each log record: (highest RowID, clock time) in RowID order,
        # one entry per commit that brought records.
        self._stamp_ids: list[int] = []
        self._stamp_times: list[float] = []
        self._wake: dict[str, anyio.Event] = {}
        self._positions: dict[str, int] = {}
        self.sent = 0
        self.applied = 0

    @property
    def _stamped(self) -> int:
        return self._stamp_ids[-1] if self._stamp_ids else 0

    async def on_start(self) -> None:
        self.db.remove_replication_listener(self._on_commit)  # a restart must not add it twice
        self.db.add_replication_listener(self._on_commit)
        self._on_commit(await self.db.replication_last_row_id())  # a previous run's: seen now
        for peer in self.neighbours:
            self._wake[peer] = anyio.Event()
            self.start_task(self._replicate_to, peer)

    async def on_stop(self) -> None:
        self.db.remove_replication_listener(self._on_commit)
        if self.trace_log is not None:
            self.trace_log.flush()

    def _on_commit(self, last_row_id: int) -> None:
        """A commit's highest log RowID: its new records' delay runs from now; the senders
        wake (most commits change no replicated data: nothing to do)."""
        if last_row_id <= self._stamped:
            return
        self._stamp_ids.append(last_row_id)
        self._stamp_times.append(self.clock.now())
        for event in self._wake.values():
            event.set()

    def _first_seen(self, row_id: int) -> float:
        if row_id > self._stamped:  # read before its commit's probe came: seen now
            self._on_commit(row_id)
        return self._stamp_times[bisect.bisect_left(self._stamp_ids, row_id)]

    # -- sending -------------------------------------------------------------------------

    async def _replicate_to(self, peer: str) -> None:
        position = saved = await self.db.replication_position(peer, "sent")
        saved_at = self.clock.now()
        next_batch = 0.0  # clock time before which this peer's log is not read again
        while True:
            self._wake[peer] = anyio.Event()
            if self._stamped <= position:  # nothing new past what this peer has
                unsaved_for = self.clock.now() - saved_at
                if position > saved and unsaved_for >= self.delay:
                    await self._save(peer, position)
                    saved, saved_at = position, self.clock.now()
                    continue
                await self._sleep(peer, None if position == saved else self.delay - unsaved_for)
                continue
            # Wait for the oldest record this peer lacks, then read only what is due: the
            # first-seen times are in memory, so a record is read once, not once a batch
            # until its delay has passed.
            through = await self._due(position, next_batch)
            records = await self.db.replication_records_after(
                position, self.batch_size, through=through
            )
            if not records:  # nothing logged there after all (a restart stamped it)
                position = through
                continue
            last = records[-1].row_id if len(records) == self.batch_size else through
            batch = tuple(r for r in records if self._goes_to(r, peer))
            try:
                acked = await self._send(peer, batch) if batch else last
            except (UnknownAddress, RequestTimeout, BusClosed) as exc:
                self.trace(
                    f"Cannot replicate to site {peer} now ({exc}); will retry.", severity="W"
                )
                await self.clock.sleep(self.retry_interval)
                continue
            next_batch = self.clock.now() + self.batch_interval
            position = max(position, acked, last)
            self._positions[peer] = position
            if self.clock.now() - saved_at >= self.delay:
                await self._save(peer, position)
                saved, saved_at = position, self.clock.now()
            self._forget()

    async def _sleep(self, peer: str, seconds: float | None) -> None:
        """Until a commit brings records (or ``seconds`` have passed)."""
        wake = self._wake[peer]
        timer = None if seconds is None else self.clock.call_later(seconds, wake.set)
        try:
            await wake.wait()
        finally:
            if timer is not None:
                timer.cancel()

    async def _save(self, peer: str, position: int) -> None:
        await self.db.write(
            partial(ops.save_drs_sent, peer=peer, row_id=position, neighbours=self.neighbours)
        )

    async def _due(self, position: int, not_before: float) -> int:
        """Wait until the first record after ``position`` is due (and ``not_before``);
        return the highest RowID due then."""
        first = max(self._first_seen(position + 1) + self.delay, not_before)
        now = self.clock.now()
        if first > now:
            await self.clock.sleep(first - now)
            now = self.clock.now()
        seen = bisect.bisect_right(self._stamp_times, now - self.delay)
        return self._stamp_ids[max(seen - 1, bisect.bisect_left(self._stamp_ids, position + 1))]

    def _goes_to(self, record: ReplicationRecord, peer: str) -> bool:
        """Whether ``peer`` gets the record: never back where it came from; site data only
        up and toward the package's source site."""
        if record.via == peer:
            return False
        column = SCOPES[record.table].site_data
        if not column or peer == self.parent:
            return True
        pkg_id = msgspec.json.decode(record.row_json).get(column, "")
        return isinstance(pkg_id, str) and self._toward(addresses.package_site(pkg_id)) == peer

    async def _send(self, peer: str, batch: tuple[ReplicationRecord, ...]) -> int:
        address = addresses.drs(peer)
        if address not in self.bus.addresses():
            raise UnknownAddress(address)  # not started yet (or stopped): no dead letter
        acked: int = await self.request(address, ReplicationBatch(self.site, batch), None)
        self.sent += len(batch)
        self.trace(
            f"Replicated {len(batch)} change(s) to site {peer}, up to record {batch[-1].row_id}."
        )
        return acked

    def _forget(self) -> None:
        """Drop first-seen times every neighbour is past."""
        if len(self._stamp_ids) > 10_000 and len(self._positions) == len(self.neighbours):
            done = bisect.bisect_right(self._stamp_ids, min(self._positions.values()))
            done = min(done, len(self._stamp_ids) - 1)  # the last one says how far DRS saw
            del self._stamp_ids[:done], self._stamp_times[:done]

    # -- receiving -----------------------------------------------------------------------

    @handler
    async def receive(self, msg: ReplicationBatch) -> int:
        if msg.source not in self.neighbours:
            raise ValueError(f"site {self.site} does not replicate with site {msg.source}")
        position, applied = await self.db.write(
            partial(ops.apply_replication, peer=msg.source, records=list(msg.records))
        )
        self.applied += applied
        if applied:
            self.trace(
                f"Applied {applied} change(s) from site {msg.source}, up to record {position}."
            )
        return position
