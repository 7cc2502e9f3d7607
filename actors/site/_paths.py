"""Where a site server keeps what travels between sites (its folder: ``server_root``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from actors.sitedb import ops

__all__ = ["package_file", "receive_box", "release_package_file", "smspkg", "tosend_box"]


def receive_box(server_root: Path) -> Path:
    """``inboxes/despoolr.box/receive``, shared as ``SMS_SITE``: where senders write."""
    return server_root / "inboxes" / "despoolr.box" / "receive"


def tosend_box(server_root: Path) -> Path:
    """``inboxes/schedule.box/tosend``: the scheduler's instruction files (``.Icl``)."""
    return server_root / "inboxes" / "schedule.box" / "tosend"


def smspkg(server_root: Path) -> Path:
    """``SMSPKG``: the compressed package files."""
    return server_root / "SMSPKG"


def package_file(server_root: Path, pkg_id: str, version: int, base: int = 0) -> Path:
    """``SMSPKG/<PkgID>.PCK.<version>``, or ``<PkgID>.DLT.<base>.<version>`` for the changes
    from ``base``, as the reference names them."""
    if base:
        return smspkg(server_root) / f"{pkg_id}.DLT.{base}.{version}"
    return smspkg(server_root) / f"{pkg_id}.PCK.{version}"


def release_package_file(conn: sqlite3.Connection, path: str) -> int:
    """A write op: one reference fewer on a package file, the file deleted at 0 in the same
    write. In the writer, so no reference is taken in between: whoever takes one (a mini-job
    for another site, a despooler forwarding the file) first commits it, then finds the
    file there or writes it. Returns the count left."""
    left = ops.release_package_file_ref(conn, path)
    if left == 0:
        Path(path).unlink(missing_ok=True)
    return left
