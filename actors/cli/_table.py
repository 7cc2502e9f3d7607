"""The content status table ``cmdist status`` and ``cmdist demo`` print."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table

from actors import PackageStatus

__all__ = ["status_table"]


def status_table(packages: Iterable[PackageStatus], *, title: str = "Content status") -> Table:
    table = Table(title=title, title_justify="left")
    for header in ("package", "name", "DP", "state", "version", "last message"):
        table.add_column(header, justify="right" if header == "version" else "left")
    for pkg in packages:
        if not pkg.dps:
            table.add_row(pkg.pkg_id, pkg.name, "(no DP)", "-", "0", "")
            continue
        for i, dp in enumerate(pkg.dps):
            state: str = dp.state
            if state == "Installed" and dp.version != pkg.version:
                state = f"Installed (v{dp.version}, current v{pkg.version})"
            table.add_row(
                pkg.pkg_id if i == 0 else "",
                pkg.name if i == 0 else "",
                dp.dp,
                _styled(state),
                str(dp.version),
                "" if dp.last_message is None else str(dp.last_message),
            )
    return table


def _styled(state: str) -> str:
    colour = {"Installed": "green", "Failed": "red", "Retrying": "yellow"}.get(
        state.split(" ", 1)[0], ""
    )
    return f"[{colour}]{state}[/]" if colour else state
