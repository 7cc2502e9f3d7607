"""What one site's DRS sends another: a batch of its replication log, acknowledged."""

from __future__ import annotations

import msgspec

from actors.sitedb import ReplicationRecord

__all__ = ["ReplicationBatch"]


class ReplicationBatch(msgspec.Struct, frozen=True):
    """Records of ``source``'s log, in its commit order; the reply is the highest RowID of
    ``source``'s log applied at the receiving site (the sender's new position)."""

    source: str
    records: tuple[ReplicationRecord, ...]
