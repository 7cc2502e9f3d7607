"""``python -m bench stress``: ``cmdist stress`` as a benchmark (one implementation,
``actors.cli._stress``): N packages (default 10,000) across the hierarchy with faults
injected, then at N/2 in the same run, every check and figure; with ``--json`` one object
last (``ok``, ``packages``, ``seconds``, ``packages_per_s``, ``peak_rss_mb``, ``half``)
plus ``growth``: seconds at N over seconds at N/2 (linear growth is about 2)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import msgspec
from rich.console import Console

from actors.cli._stress import StressOptions, stress
from actors.cli._stress_view import StressProgress, print_stress
from bus import run


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench stress")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--packages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--dir", default=None, help="where to put the temporary data")
    parser.add_argument("--keep", action="store_true", help="keep the data roots")
    args = parser.parse_args(list(argv))
    if args.packages < 1 or args.concurrency < 1:
        parser.error("--packages and --concurrency must be >= 1")
    root = Path(tempfile.mkdtemp(prefix="bench-stress-", dir=args.dir))
    opts = StressOptions(
        root, args.packages, seed=args.seed, concurrency=args.concurrency, faults=not args.no_faults
    )
    # progress and tables on stderr under --json: stdout ends with the one JSON object
    console = Console(file=sys.stderr if args.json else sys.stdout)
    try:
        with StressProgress(console, quiet=False) as view:
            result = run(stress, opts, view)
        print_stress(console, result)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        out = msgspec.to_builtins(result)
        half = result.half
        out["growth"] = round(result.seconds / half.seconds, 2) if half and half.seconds else None
        print(msgspec.json.encode(out).decode(), flush=True)
    return 0 if result.ok else 1
