"""The content library: single-instance storage, snapshots, signatures, deltas, package files."""

__all__: list[str] = []
