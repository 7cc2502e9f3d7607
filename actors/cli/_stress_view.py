"""How a stress run shows itself: live rich progress bars on a terminal, a line per phase
otherwise (CI, pipes), nothing with ``--json``; and the closing tables."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from actors.cli._stress import StressResult, StressRun

__all__ = ["StressProgress", "print_stress"]


class StressProgress:
    """A :class:`~actors.cli._stress.StressView` on a rich console."""

    def __init__(self, console: Console, *, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.tasks: dict[str, TaskID] = {}
        self.progress: Progress | None = None
        if console.is_terminal and not quiet:
            self.progress = Progress(
                TextColumn("{task.description:<14}"),
                BarColumn(bar_width=40),
                MofNCompleteColumn(),
                TextColumn("{task.percentage:>5.1f} %"),
                console=console,
            )

    def __enter__(self) -> StressProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def phase(self, name: str, total: int) -> None:
        if self.progress is not None:
            self.tasks[name] = self.progress.add_task(name, total=total)
        else:
            self.say(f"{name}: {total} packages")

    def advance(self, name: str) -> None:
        if self.progress is not None:
            self.progress.advance(self.tasks[name])

    def say(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, soft_wrap=True, markup=False)


def print_stress(console: Console, result: StressResult) -> None:
    runs: list[StressRun] = [r for r in (result.half, result) if r is not None]
    figures = Table(title="Stress figures", title_justify="left")
    figures.add_column("figure")
    for run in runs:
        figures.add_column(f"{run.packages:,} packages", justify="right")
    rows = [
        ("wall time, s", "seconds"),
        ("packages/s", "packages_per_s"),
        ("latency p50, ms", "latency_p50_ms"),
        ("latency p99, ms", "latency_p99_ms"),
        ("peak RSS, MiB", "peak_rss_mb"),
        ("databases, MiB", "database_mb"),
        ("libraries, MiB", "library_mb"),
        ("sources, MiB", "source_mb"),
        ("DPs targeted", "dps"),
        ("(package, DP) deliveries", "deliveries"),
        ("updates", "updates"),
        ("redistributes", "redistributes"),
    ]
    for label, field in rows:
        figures.add_row(label, *(f"{getattr(r, field):,}" for r in runs))
    console.print(figures)
    for run in runs:
        checks = Table(title=f"Checks, {run.packages:,} packages", title_justify="left")
        for header in ("check", "result", "checked", "failed", "detail"):
            checks.add_column(
                header, justify="right" if header in ("checked", "failed") else "left"
            )
        for c in run.checks:
            verdict = "[green]pass[/]" if c.ok else "[red]FAIL[/]"
            checks.add_row(c.name, verdict, f"{c.checked:,}", f"{c.failed:,}", _plain(c.detail))
        for f in run.faults:
            verdict = "[green]recovered[/]" if f.recovered else "[red]NOT recovered[/]"
            checks.add_row(
                f"fault: {f.kind} ({_plain(f.where)})",
                verdict,
                f"{f.injected:,}",
                f"{f.fired:,} fired",
                _plain(f.detail),
            )
        console.print(checks)
    verdict = "every check passed" if result.ok else "SOME CHECKS FAILED"
    roots = Path(result.root).parent
    console.print(f"{verdict}; data roots under {roots}", soft_wrap=True, markup=False)


def _plain(text: str) -> str:
    """NAL paths hold [brackets] rich would take for markup."""
    return text.replace("[", r"\[")
