"""Timestamps as the reference's statements write them (two formats, as the product has)."""

from __future__ import annotations

import datetime as dt

__all__ = ["product_time", "refresh_time"]


def product_time(when: dt.datetime | None = None) -> str:
    """A timestamp as the reference's statements write most of them (``CreationTime``,
    ``LastUpdateTime``): ``2019/01/07 20:05:18``. Components pass their clock's time."""
    when = when or dt.datetime.now(dt.UTC)
    return when.strftime("%Y/%m/%d %H:%M:%S")


def refresh_time(when: dt.datetime) -> str:
    """``LastRefresh`` as the reference writes it: ``05/16/2016 19:26:58`` (MM/DD/YYYY, as
    the column's default ``04/10/1970 06:35:00``)."""
    return when.strftime("%m/%d/%Y %H:%M:%S")
