"""``python -m bench bus [--json] [--count N] [--round-trips N] [--repeat N]``.

In one run, on uvloop (where installed) and on the default asyncio loop:
(a) one-way throughput of ``count`` small messages from one actor to another, against
    the same count through a bare bounded ``asyncio.Queue`` between two tasks;
(b) request/reply round trips (p50, p99) actor to actor, against a bare two-queue round trip.
Throughput is the best of ``repeat`` runs (the machine is noisy); latencies pool every run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import msgspec

from bench._report import emit, percentile
from bus import Actor, Bus, handler, loop_name, run, uvloop_available

MAILBOX = 1000  # the Actor default; the bare queue gets the same bound


class Small(msgspec.Struct, frozen=True):
    n: int


class Sink(Actor):
    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.finished = asyncio.Event()

    @handler
    async def small(self, msg: Small) -> None:
        self.seen += 1
        if self.seen == self.count:
            self.finished.set()


class Source(Actor):
    def __init__(self, count: int) -> None:
        self.count = count

    async def blast(self) -> None:
        send = self.send
        for i in range(self.count):
            await send("bench/Sink", Small(i))


class Echo(Actor):
    @handler
    async def small(self, msg: Small) -> int:
        return msg.n


class Asker(Actor):
    async def round_trips(self, count: int, out: list[float]) -> None:
        request = self.request
        clock = time.perf_counter_ns
        for i in range(count):
            t0 = clock()
            await request("bench/Echo", Small(i), 5.0)
            out.append((clock() - t0) / 1000)


async def actor_throughput(count: int) -> float:
    async with Bus() as bus:
        sink = bus.spawn(Sink(count), "bench/Sink")
        source = bus.spawn(Source(count), "bench/Source")
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        source.start_task(source.blast)
        await sink.finished.wait()
        return count / (time.perf_counter() - t0)


async def queue_throughput(count: int) -> float:
    queue: asyncio.Queue[Small] = asyncio.Queue(MAILBOX)
    finished = asyncio.Event()

    async def consume() -> None:
        for _ in range(count):
            await queue.get()
        finished.set()

    async def produce() -> None:
        for i in range(count):
            await queue.put(Small(i))

    t0 = time.perf_counter()
    consumer = asyncio.ensure_future(consume())
    producer = asyncio.ensure_future(produce())
    await finished.wait()
    elapsed = time.perf_counter() - t0
    await asyncio.gather(consumer, producer)
    return count / elapsed


async def actor_round_trips(count: int) -> list[float]:
    out: list[float] = []
    async with Bus() as bus:
        bus.spawn(Echo(), "bench/Echo")
        asker = bus.spawn(Asker(), "bench/Asker")
        await asyncio.sleep(0)
        await asker.round_trips(count, out)
    return out


async def queue_round_trips(count: int) -> list[float]:
    requests: asyncio.Queue[Small] = asyncio.Queue(MAILBOX)
    replies: asyncio.Queue[int] = asyncio.Queue(MAILBOX)

    async def serve() -> None:
        for _ in range(count):
            msg = await requests.get()
            await replies.put(msg.n)

    server = asyncio.ensure_future(serve())
    out: list[float] = []
    clock = time.perf_counter_ns
    for i in range(count):
        t0 = clock()
        await requests.put(Small(i))
        await replies.get()
        out.append((clock() - t0) / 1000)
    await server
    return out


async def measure(count: int, round_trips: int, repeat: int) -> dict[str, Any]:
    actor_rates: list[float] = []
    queue_rates: list[float] = []
    actor_rr: list[float] = []
    queue_rr: list[float] = []
    for _ in range(repeat):  # interleaved, so drift hits both sides alike
        queue_rates.append(await queue_throughput(count))
        actor_rates.append(await actor_throughput(count))
        queue_rr += await queue_round_trips(round_trips)
        actor_rr += await actor_round_trips(round_trips)
    actor_rate, queue_rate = max(actor_rates), max(queue_rates)
    rr_p50, queue_p50 = percentile(actor_rr, 50), percentile(queue_rr, 50)
    return {
        "loop": loop_name(),
        "actor_msgs_per_s": round(actor_rate),
        "queue_msgs_per_s": round(queue_rate),
        "throughput_ratio": round(actor_rate / queue_rate, 3),
        "rr_p50_us": round(rr_p50, 2),
        "rr_p99_us": round(percentile(actor_rr, 99), 2),
        "queue_rr_p50_us": round(queue_p50, 2),
        "queue_rr_p99_us": round(percentile(queue_rr, 99), 2),
        "rr_ratio": round(rr_p50 / queue_p50, 3),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench bus", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--count", type=int, default=1_000_000, help="one-way messages")
    parser.add_argument("--round-trips", type=int, default=20_000, help="per repeat")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    loops = [True, False] if uvloop_available() else [False]
    results = [run(measure, args.count, args.round_trips, args.repeat, use_uvloop=u) for u in loops]
    rows = [
        [
            r["loop"],
            r["actor_msgs_per_s"],
            r["queue_msgs_per_s"],
            r["throughput_ratio"],
            r["rr_p50_us"],
            r["rr_p99_us"],
            r["queue_rr_p50_us"],
            r["queue_rr_p99_us"],
            r["rr_ratio"],
        ]
        for r in results
    ]
    headers = [
        "loop",
        "actor msg/s",
        "queue msg/s",
        "ratio",
        "rr p50 µs",
        "rr p99 µs",
        "queue rr p50 µs",
        "queue rr p99 µs",
        "rr ratio",
    ]
    title = (
        f"bus: {args.count:,} one-way messages (best of {args.repeat}), "
        f"{args.round_trips * args.repeat:,} round trips; targets: ratio >= 0.5, rr ratio <= 3"
    )
    primary = results[0]
    result = {**primary, "per_loop": {r["loop"]: r for r in results}}
    result["targets_met"] = all(
        r["throughput_ratio"] >= 0.5 and r["rr_ratio"] <= 3.0 for r in results
    )
    emit(title, headers, rows, result, args.json)
    return 0
