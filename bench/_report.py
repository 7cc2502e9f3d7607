"""Shared output for benchmarks: a readable table, then (with ``--json``) one JSON line last."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of samples, by linear interpolation."""
    if not samples:
        return float("nan")
    if len(samples) == 1:
        return float(samples[0])
    return statistics.quantiles(samples, n=1000, method="inclusive")[
        min(998, max(0, round(q * 10) - 1))
    ]


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [title, line, "-" * len(line)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)


def emit(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    result: Mapping[str, Any],
    as_json: bool,
) -> None:
    print(table(title, headers, rows), flush=True)
    if as_json:
        print(json.dumps(result, sort_keys=True), flush=True)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
