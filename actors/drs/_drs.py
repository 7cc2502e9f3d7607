"""DRS: database replication between a site and its neighbours in the hierarchy.

Every change to global data (``SCOPES``) at a site lands, by trigger, in the site's
``DrsLog`` in commit order. This site's DRS sends its log to each neighbouring site (the
parent and the children: a secondary gets global data through its parent primary), each
record ``replication_delay`` seconds of clock time after DRS first saw it, in order, in
batches; the neighbour's DRS applies a batch in one commit with its position for this
site (:func:`actors.sitedb.ops.apply_replication`) and replies with that position, which
this side saves. A record the neighbour forwarded to us is never sent back to it, so a
change made at any site reaches every other site once, along the tree.

Exactly once: the receiver skips records at or below its saved position (a batch sent
again after either side restarted), and the sender resends from the last acknowledged
position. Nothing else crosses: a site's DRS knows the other sites only by address.
"""

from __future__ import annotations

from functools import partial

import anyio

from actors import addresses
from actors.drs._messages import ReplicationBatch
from actors.sitedb import ReplicationRecord, SiteDatabase, ops
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
        retry_interval: float = 60.0,
        batch_size: int = 500,
        log: CMTraceLog | None = None,
    ) -> None:
        if delay < 0 or retry_interval <= 0 or batch_size < 1:
            raise ValueError("delay >= 0, retry_interval > 0 and batch_size >= 1")
        self.site = site
        self.db = db
        self.neighbours = neighbours
        self.delay = delay
        self.retry_interval = retry_interval
        self.batch_size = batch_size
        self.trace_log = log
        self._seen: dict[int, float] = {}  # log RowID -> clock time DRS first read it
        self._wake: dict[str, anyio.Event] = {}
        self._positions: dict[str, int] = {}
        self._commit = anyio.Event()
        self._stamped = 0  # the last log RowID whose commit time is noted
        self.sent = 0
        self.applied = 0

    async def on_start(self) -> None:
        self.db.remove_commit_listener(self._on_commit)  # a restart must not add it twice
        self.db.add_commit_listener(self._on_commit)
        self.start_task(self._stamp)
        for peer in self.neighbours:
            self._wake[peer] = anyio.Event()
            self.start_task(self._replicate_to, peer)

    async def on_stop(self) -> None:
        self.db.remove_commit_listener(self._on_commit)
        if self.trace_log is not None:
            self.trace_log.flush()

    def _on_commit(self) -> None:
        self._commit.set()

    async def _stamp(self) -> None:
        """Note when each log record was committed (its delay runs from then), even while
        the senders wait out an earlier record's delay; wake the senders when there is
        something new (most commits change no global data: one read per commit, not one
        per neighbour)."""
        while True:
            self._commit = anyio.Event()
            found = False
            while row_ids := await self.db.replication_row_ids_after(self._stamped, 10_000):
                now = self.clock.now()
                for row_id in row_ids:
                    self._seen.setdefault(row_id, now)
                self._stamped = row_ids[-1]
                found = True
            if found:
                for event in self._wake.values():
                    event.set()
            await self._commit.wait()

    # -- sending -------------------------------------------------------------------------

    async def _replicate_to(self, peer: str) -> None:
        position = await self.db.replication_position(peer, "sent")
        while True:
            self._wake[peer] = anyio.Event()
            if self._stamped <= position:
                await self._wake[peer].wait()  # nothing new past what this peer has
                continue
            records = await self.db.replication_records_after(position, self.batch_size)
            if not records:
                await self._wake[peer].wait()
                continue
            due = await self._due(records)
            batch = tuple(r for r in due if r.via != peer)  # never back where it came from
            try:
                acked = await self._send(peer, batch) if batch else due[-1].row_id
            except (UnknownAddress, RequestTimeout, BusClosed) as exc:
                self.trace(
                    f"Cannot replicate to site {peer} now ({exc}); will retry.", severity="W"
                )
                await self.clock.sleep(self.retry_interval)
                continue
            position = max(position, acked, due[-1].row_id)
            await self.db.write(partial(ops.save_drs_sent, peer=peer, row_id=position))
            self._positions[peer] = position
            self._forget()

    async def _due(self, records: list[ReplicationRecord]) -> list[ReplicationRecord]:
        """The records whose delay has passed, oldest first (waiting for the first one)."""
        now = self.clock.now()
        for r in records:
            self._seen.setdefault(r.row_id, now)
        first = self._seen[records[0].row_id] + self.delay
        if first > now:
            await self.clock.sleep(first - now)
            now = self.clock.now()
        return [r for r in records if self._seen[r.row_id] + self.delay <= now] or records[:1]

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
        if len(self._seen) > 10_000 and len(self._positions) == len(self.neighbours):
            done = min(self._positions.values())
            for row_id in [r for r in self._seen if r <= done]:
                del self._seen[row_id]

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
