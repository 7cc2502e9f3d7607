"""A site's management point relay and State System, for pull DP state messages.

The MP relay (``MP_Relay.log``) takes a state message posted over HTTP, writes it as an
``.SMX`` file into ``inboxes\\auth\\statesys.box\\incoming`` (the MP is co-located with the
site server) and tells the State System; the State System (``statesys.log``) processes
each file into ``PullDPResponse`` (``spProcessPullDPMessage``: the version from the
message's serial number) and deletes the file once the row is committed. A file the
State System has not processed when the site stops is processed at the next start.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from contextlib import suppress
from functools import partial
from pathlib import Path

import anyio
import msgspec

from actors import addresses
from actors.dp import PullDPStateMessage, parse_report
from actors.errors import BadNotification
from actors.sitedb import SiteDatabase, ops
from actors.status import CMTraceLog, Component
from bus import Bus, BusClosed, Clock, UnknownAddress, handler

__all__ = ["MpRelay", "StateMessageFile", "StateSystem", "statesys_incoming"]


def statesys_incoming(server_root: Path) -> Path:
    return server_root / "inboxes" / "auth" / "statesys.box" / "incoming"


class StateMessageFile(msgspec.Struct, frozen=True):
    """An ``.SMX`` the MP relay wrote into ``statesys.box\\incoming``."""

    name: str


class MpRelay:
    """The MP's relay endpoint of one site (registered on the content server)."""

    def __init__(
        self, site: str, server_root: Path, bus: Bus, clock: Clock, log: CMTraceLog | None
    ) -> None:
        self.site = site
        self.incoming = statesys_incoming(server_root)
        self.bus = bus
        self.clock = clock
        self.log = log

    def _trace(self, line: str) -> None:
        if self.log is not None:
            self.log.write(line, when=self.clock.wall())

    async def receive(self, body: bytes) -> None:
        """Relay one message; refuses (BadNotification) what is not a pull DP state message."""
        text = body.decode("utf-8", "replace")
        self._trace(
            "Mp Message Handler: start message processing for Relay. -----------------------"
        )
        self._trace("Mp Message Handler: FileType=SMX")
        parse_report(text)  # only what the State System can process is relayed
        self._trace("Message Body :")
        self._trace(text)
        self._trace("Inv-Relay Task: Processing message body")
        name = f"{uuid.uuid4().hex[:8].upper()}.SMX"
        await anyio.to_thread.run_sync(_write_atomic, self.incoming, name, body)
        self._trace(f"Relay: Outbox dir: {self.incoming}")
        # The file is written: a State System that is not running takes it at its next
        # start (a refusal now would only make the pull DP send the message again).
        with suppress(BusClosed, UnknownAddress):
            await self.bus.send(addresses.statesys(self.site), StateMessageFile(name))


class StateSystem(Component):
    """``<SITE>/StateSys``."""

    request_timeout = None

    def __init__(self, db: SiteDatabase, server_root: Path, log: CMTraceLog | None) -> None:
        self.db = db
        self.incoming = statesys_incoming(server_root)
        self.trace_log = log

    async def on_start(self) -> None:
        names = await anyio.to_thread.run_sync(_pending, self.incoming)
        for name in names:  # left by a stop before they were processed
            await self.process(StateMessageFile(name))

    @handler
    async def process(self, msg: StateMessageFile) -> None:
        path = self.incoming / msg.name
        try:
            text = await anyio.Path(path).read_text()
        except FileNotFoundError:
            return  # processed already
        self.trace(f"CMessageProcessor - Processing file: {msg.name}")
        try:
            report = parse_report(text)
        except BadNotification as exc:
            self.trace(
                f"CMessageProcessor - {msg.name} is not a state message: {exc}", severity="E"
            )
            await anyio.Path(path).unlink(missing_ok=True)
            return
        self.trace(
            f"CMessageProcessor - the cmdline to DB exec dbo.spProcessStateReport N'?{text}'"
        )
        await self._store(report)
        await anyio.Path(path).unlink(missing_ok=True)

    async def _store(self, m: PullDPStateMessage) -> None:
        pks = await self.db.dp_status_id(m.pkg_id, m.nal_path)
        if pks is None:
            self.trace(
                f"CMessageProcessor - no status of package {m.pkg_id} on {m.nal_path}: the"
                " state message is dropped",
                severity="W",
            )
            return
        await self.db.write(
            partial(
                ops.insert_pull_dp_response,
                pkg_status_id=pks,
                message_time=m.time.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"),
                pkg_version=m.version,
                action_state=m.state,
                action_data=m.data,
            )
        )


def _pending(folder: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(folder) if n.endswith(".SMX"))
    except FileNotFoundError:
        return []


def _write_atomic(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{name}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / name)
