"""DRS's writes: a batch of a neighbour's replication records applied, and its positions.

A record is applied like a local write (the receiving site's triggers fire: a package
row inserted makes a ``PkgNotification`` for the receiving DistMgr), inside a
``DrsApplying`` row that names where it came from, so the receiving log records the
change for forwarding to the other neighbours, not back. The neighbour's position is
saved in the same commit: a batch delivered twice is applied once.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from actors.sitedb.enums import ServerAction
from actors.sitedb.rows import ReplicationRecord
from actors.sitedb.schema import DRS_COLUMNS, SCOPES

__all__ = ["ReplicationRecord", "apply_replication", "drs_position", "save_drs_sent"]

_decode_row = msgspec.json.Decoder(dict[str, Any]).decode

SENT = "sent"
RECEIVED = "received"


def drs_position(conn: sqlite3.Connection, peer: str, direction: str) -> int:
    row = conn.execute(
        "SELECT LastRowID FROM DrsPosition WHERE Peer = ? AND Direction = ?", (peer, direction)
    ).fetchone()
    return int(row[0]) if row else 0


def _save(conn: sqlite3.Connection, peer: str, direction: str, row_id: int) -> None:
    conn.execute(
        "INSERT INTO DrsPosition (Peer, Direction, LastRowID) VALUES (?, ?, ?)"
        " ON CONFLICT (Peer, Direction)"
        " DO UPDATE SET LastRowID = MAX(LastRowID, excluded.LastRowID)",
        (peer, direction, row_id),
    )


def save_drs_sent(
    conn: sqlite3.Connection, peer: str, row_id: int, neighbours: tuple[str, ...] = ()
) -> None:
    """The neighbour acknowledged our log up to ``row_id``. The records every one of
    ``neighbours`` has acknowledged are dropped from the log, as SMSDBMON drops the
    notifications it delivered: a restart resends from the saved positions, never below."""
    _save(conn, peer, SENT, row_id)
    if not neighbours:
        return
    marks = ", ".join("?" for _ in neighbours)
    known, lowest = conn.execute(
        "SELECT COUNT(*), MIN(LastRowID) FROM DrsPosition"
        f" WHERE Direction = ? AND Peer IN ({marks})",
        (SENT, *neighbours),
    ).fetchone()
    if known == len(set(neighbours)):
        conn.execute("DELETE FROM DrsLog WHERE RowID <= ?", (lowest,))


def apply_replication(
    conn: sqlite3.Connection, peer: str, records: list[ReplicationRecord]
) -> tuple[int, int]:
    """Apply the records of ``peer``'s log not applied yet; (position now, records applied)."""
    position = drs_position(conn, peer, RECEIVED)
    applied = 0
    origin: str | None = None  # the DrsApplying row, written once per run of one origin
    try:
        for record in records:
            if record.row_id <= position:
                continue  # delivered again after a restart: applied already
            if record.table not in DRS_COLUMNS:
                raise ValueError(
                    f"replication record {record.row_id} from {peer}: table {record.table!r}"
                )
            if origin is None:
                conn.execute(
                    "INSERT INTO DrsApplying (Origin, Via) VALUES (?, ?)", (record.origin, peer)
                )
            elif record.origin != origin:
                conn.execute("UPDATE DrsApplying SET Origin = ?", (record.origin,))
            origin = record.origin
            _apply(conn, record)
            position = record.row_id
            applied += 1
    finally:
        if origin is not None:
            conn.execute("DELETE FROM DrsApplying")
    if records:
        position = max(position, records[-1].row_id)  # records skipped by the sender count
        _save(conn, peer, RECEIVED, position)
    return position, applied


def _apply(conn: sqlite3.Connection, record: ReplicationRecord) -> None:
    table = record.table
    scope = SCOPES[table]
    row: dict[str, Any] = _decode_row(record.row_json)
    key = scope.key
    where = " AND ".join(f"{k} = ?" for k in key)
    key_values = [row[k] for k in key]
    if record.operation == "DELETE":
        conn.execute(f"DELETE FROM {table} WHERE {where}", key_values)
        return
    glob = [c for c in DRS_COLUMNS[table] if c in row and c not in scope.local_columns]
    if table == "PkgServers" and row.get("Action") == int(ServerAction.REMOVE):
        glob.append("Action")  # a removal request asked at another site travels with it
    sets = [c for c in glob if c not in key]
    current = conn.execute(
        f"SELECT {', '.join(sets) or '1'} FROM {table} WHERE {where}", key_values
    ).fetchone()
    if current is None:
        if record.operation != "INSERT" and table == "SMSPackages":
            return  # an update of a package deleted here since: nothing to update
        # A new row arrives with what it was inserted with (local columns included: a DP
        # added at the CAS comes with Action 2 for its site's DistMgr), but never with
        # another site's own row number.
        cols = [c for c in DRS_COLUMNS[table] if c in row and c not in scope.identity]
        if record.operation != "INSERT":
            cols = [c for c in cols if c in glob or c in key]
        conn.execute(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
            [row[c] for c in cols],
        )
        return
    # Only what differs: a column named in an UPDATE fires the receiving site's "UPDATE
    # OF" triggers even when its value stays (a second PkgNotification for nothing).
    sets = [c for c, have in zip(sets, current[: len(sets)], strict=True) if have != row[c]]
    if sets:
        conn.execute(
            f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in sets)} WHERE {where}",
            [*(row[c] for c in sets), *key_values],
        )
