"""The ``cmdist`` command line.

``cmdist demo`` is, for now, a bus demo: a pipeline of actors (a source, a pool of hashing
workers, a collector) pushing real messages, then request/reply round trips, with the
figures measured on this machine. It becomes the hierarchy demo once the flows exist.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from typing import Any

import msgspec

from bus import Actor, Bus, handler, loop_name, run

_MASK = (1 << 64) - 1


class Chunk(msgspec.Struct, frozen=True):
    seq: int
    data: bytes


class Digest(msgspec.Struct, frozen=True):
    seq: int
    digest: bytes


class Tally(msgspec.Struct, frozen=True):
    """Ask the collector how many digests it holds."""


class Progress(msgspec.Struct, frozen=True):
    done: int


def _payload(seq: int) -> bytes:
    return seq.to_bytes(8, "little") * 8


def _fold(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "little")


class Source(Actor):
    def __init__(self, chunks: int) -> None:
        self.chunks = chunks

    async def produce(self) -> None:
        for seq in range(self.chunks):
            await self.send("demo/Hasher", Chunk(seq, _payload(seq)))


class Hasher(Actor):
    workers = 3  # one mailbox, three concurrent workers (a worker pool)

    @handler
    async def chunk(self, msg: Chunk) -> None:
        await self.send("demo/Collector", Digest(msg.seq, hashlib.sha256(msg.data).digest()))


class Collector(Actor):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.checksum = 0
        self.finished = asyncio.Event()

    @handler
    async def digest(self, msg: Digest) -> None:
        self.count += 1
        self.checksum = (self.checksum + _fold(msg.digest)) & _MASK
        if self.count % 10_000 == 0:
            await self.publish("demo/progress", Progress(self.count))
        if self.count == self.expected:
            self.finished.set()

    @handler
    async def tally(self, msg: Tally) -> int:
        return self.count


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def _demo(chunks: int, round_trips: int) -> dict[str, Any]:
    async with Bus() as bus:
        collector = bus.spawn(Collector(chunks), "demo/Collector")
        bus.spawn(Hasher(), "demo/Hasher")
        source = bus.spawn(Source(chunks), "demo/Source")
        async with bus.subscribe("demo/progress", buffer=4, policy="drop_oldest") as progress:
            t0 = time.perf_counter()
            source.start_task(source.produce)
            await collector.finished.wait()
            elapsed = time.perf_counter() - t0
            updates = progress.received
        latencies: list[float] = []
        for _ in range(round_trips):
            r0 = time.perf_counter_ns()
            await bus.request("demo/Collector", Tally())
            latencies.append((time.perf_counter_ns() - r0) / 1000)
        counters = {a: bus.counters(a) for a in ("demo/Source", "demo/Hasher", "demo/Collector")}
        loop = loop_name()
    expected = 0
    for seq in range(chunks):  # the same digests computed directly: the bus lost nothing
        expected = (expected + _fold(hashlib.sha256(_payload(seq)).digest())) & _MASK
    messages = chunks * 2  # source -> hasher pool -> collector
    return {
        "loop": loop,
        "messages": messages,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(messages / elapsed),
        "round_trips": round_trips,
        "rr_p50_us": round(_percentile(latencies, 50), 2),
        "rr_p99_us": round(_percentile(latencies, 99), 2),
        "checksum_ok": collector.checksum == expected,
        "progress_updates": updates,
        "dead_letters": bus.dead_letter_count,
        "actors": {a: msgspec.structs.asdict(c) for a, c in counters.items()},
    }


def _print(result: dict[str, Any]) -> None:
    print(f"cmdist demo: actor pipeline on the bus ({result['loop']} loop)")
    print(
        f"  {result['messages']:,} messages in {result['seconds']:.3f} s: "
        f"{result['msgs_per_s']:,} msg/s; digests checked: "
        f"{'ok' if result['checksum_ok'] else 'MISMATCH'}; dead letters: {result['dead_letters']}"
    )
    print(
        f"  {result['round_trips']:,} request/reply round trips: "
        f"p50 {result['rr_p50_us']:.1f} µs, p99 {result['rr_p99_us']:.1f} µs"
    )
    print(f"  {'actor':<16}{'workers':>8}{'handled':>10}{'failed':>8}{'high water':>12}")
    for address, c in result["actors"].items():
        print(
            f"  {address:<16}{c['workers']:>8}{c['handled']:>10,}{c['failed']:>8}"
            f"{c['mailbox_high_water']:>12,}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cmdist")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the demo and print measured figures")
    demo.add_argument("--chunks", type=int, default=100_000, help="chunks through the pipeline")
    demo.add_argument("--round-trips", type=int, default=10_000)
    demo.add_argument("--asyncio", action="store_true", help="plain asyncio instead of uvloop")
    demo.add_argument("--json", action="store_true", help="machine output")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.chunks < 1 or args.round_trips < 1:
        parser.error("--chunks and --round-trips must be >= 1")
    result = run(_demo, args.chunks, args.round_trips, use_uvloop=False if args.asyncio else None)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        _print(result)
    return 0 if result["checksum_ok"] and result["dead_letters"] == 0 else 1
