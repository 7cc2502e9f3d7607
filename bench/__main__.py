"""Dispatch ``python -m bench NAME [ARGS...]`` to ``bench.NAME.main(ARGS)``."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def _names() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )


def main(argv: list[str]) -> int:
    names = _names()
    if not argv or argv[0] not in names:
        print(f"usage: python -m bench {{{','.join(names)}}} [--json] [ARGS...]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{argv[0]}")
    rc: int | None = module.main(argv[1:])
    return rc or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
