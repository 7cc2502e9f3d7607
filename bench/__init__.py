"""Benchmarks: ``python -m bench NAME [--json]``. Each measures its own baseline in the same run."""
