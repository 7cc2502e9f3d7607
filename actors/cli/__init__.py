"""The ``cmdist`` command line (imports only the facade)."""

from actors.cli._main import main

__all__ = [
    "main",
]
