"""The network model: links with bandwidth, latency and injected faults."""

from actors.network._link import NetworkLink

__all__ = [
    "NetworkLink",
]
