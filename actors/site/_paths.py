"""Where a site server keeps what travels between sites (its folder: ``server_root``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["package_file", "receive_box", "smspkg", "tosend_box"]


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
