"""Send, request, handlers, backpressure, worker pools and counters."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from bus import (
    Actor,
    AddressInUse,
    Bus,
    BusError,
    ConfigError,
    InvalidMessage,
    ManualClock,
    handler,
)


class Ping(msgspec.Struct, frozen=True):
    n: int


class Hold(msgspec.Struct, frozen=True):
    key: str


class Mutable(msgspec.Struct):
    n: int


class Recorder(Actor):
    def __init__(self) -> None:
        self.seen: list[int] = []

    @handler
    async def ping(self, msg: Ping) -> int:
        self.seen.append(msg.n)
        return msg.n * 2


class Gate(Actor):
    """Handlers block until released; counts how many run at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.active = 0
        self.max_active = 0
        self.done: list[str] = []

    @handler
    async def hold(self, msg: Hold) -> str:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        await self.release.wait()
        self.active -= 1
        self.done.append(msg.key)
        return msg.key


async def settle(n: int = 50) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_send_delivers_in_order_and_request_returns_reply() -> None:
    async with Bus(clock=ManualClock()) as bus:
        rec = bus.spawn(Recorder(), "PS1/Recorder")
        for i in range(2500):  # more than the mailbox holds: backpressure, not an error
            await bus.send("PS1/Recorder", Ping(i))
        assert await bus.request("PS1/Recorder", Ping(21)) == 42
        assert rec.seen == [*range(2500), 21]
        counters = bus.counters("PS1/Recorder")
        assert counters.handled == 2501
        assert counters.failed == 0
        assert counters.mailbox_depth == 0
        assert 1 <= counters.mailbox_high_water <= 1000


async def test_full_mailbox_makes_sender_wait() -> None:
    async with Bus(clock=ManualClock()) as bus:
        gate = bus.spawn(Gate(), "PS1/Gate", mailbox_size=2)
        await bus.send("PS1/Gate", Hold("a"))  # taken by the worker, which blocks
        await settle()
        await bus.send("PS1/Gate", Hold("b"))
        await bus.send("PS1/Gate", Hold("c"))  # mailbox now full
        blocked = asyncio.ensure_future(bus.send("PS1/Gate", Hold("d")))
        await settle()
        assert not blocked.done()
        assert bus.counters("PS1/Gate").mailbox_depth == 2
        gate.release.set()
        await blocked
        await settle()
        assert gate.done == ["a", "b", "c", "d"]
        assert bus.counters("PS1/Gate").mailbox_high_water == 2


@pytest.mark.parametrize("workers", [1, 3])
async def test_worker_pool_runs_n_handlers_at_once(workers: int) -> None:
    async with Bus(clock=ManualClock()) as bus:
        gate = Gate()
        gate.workers = workers
        bus.spawn(gate, "PS1/DistMgr")
        for i in range(workers + 2):
            await bus.send("PS1/DistMgr", Hold(str(i)))
        await settle()
        assert gate.active == workers
        assert bus.counters("PS1/DistMgr").mailbox_depth == 2
        gate.release.set()
        await settle()
        assert gate.max_active == workers
        assert sorted(gate.done) == [str(i) for i in range(workers + 2)]
        assert bus.counters("PS1/DistMgr").workers == workers


async def test_handler_for_a_base_class_serves_subclasses() -> None:
    class Special(Ping, frozen=True):
        pass

    async with Bus(clock=ManualClock()) as bus:
        bus.spawn(Recorder(), "PS1/Recorder")
        assert await bus.request("PS1/Recorder", Special(5)) == 10


async def test_actor_sends_and_requests_from_inside() -> None:
    class Relay(Actor):
        @handler
        async def hold(self, msg: Hold) -> int:
            reply: int = await self.request("PS1/Recorder", Ping(len(msg.key)))
            await self.send("PS1/Recorder", Ping(reply))
            return reply

    async with Bus(clock=ManualClock()) as bus:
        rec = bus.spawn(Recorder(), "PS1/Recorder")
        relay = bus.spawn(Relay(), "PS1/Relay")
        assert await bus.request("PS1/Relay", Hold("abc")) == 6
        await settle()
        assert rec.seen == [3, 6]
        assert relay.address == "PS1/Relay"
        assert relay.bus is bus
        assert relay.log.name == "PS1/Relay"


async def test_bad_messages_and_addresses_are_refused() -> None:
    async with Bus(clock=ManualClock()) as bus:
        rec = bus.spawn(Recorder(), "PS1/Recorder")
        with pytest.raises(InvalidMessage, match="frozen"):
            await bus.send("PS1/Recorder", Mutable(1))
        with pytest.raises(InvalidMessage, match=r"msgspec\.Struct"):
            await bus.send("PS1/Recorder", {"n": 1})
        with pytest.raises(AddressInUse, match="PS1/Recorder"):
            bus.spawn(Recorder(), "PS1/Recorder")
        with pytest.raises(BusError, match="already spawned"):
            bus.spawn(rec, "PS1/Other")
        with pytest.raises(ConfigError, match="address"):
            bus.spawn(Recorder(), " PS1/x")
        with pytest.raises(ConfigError, match="mailbox_size of PS1/Zero"):
            bus.spawn(Recorder(), "PS1/Zero", mailbox_size=-1)
        await settle()
        assert rec.seen == []
        assert sorted(bus.addresses()) == ["PS1/Recorder"]


def test_handler_declarations_are_checked() -> None:
    with pytest.raises(ConfigError, match="async def"):

        class Sync(Actor):
            @handler  # type: ignore[type-var]
            def ping(self, msg: Ping) -> None: ...

    class Unfrozen(Actor):
        @handler
        async def m(self, msg: Mutable) -> None: ...

    class Twice(Actor):
        @handler
        async def a(self, msg: Ping) -> None: ...

        @handler
        async def b(self, msg: Ping) -> None: ...

    async def spawn_into(actor: Actor) -> None:
        async with Bus(clock=ManualClock()) as bus:
            bus.spawn(actor, "PS1/X")

    with pytest.raises(ConfigError, match=r"Unfrozen\.m: message type Mutable must be declared"):
        asyncio.run(spawn_into(Unfrozen()))
    with pytest.raises(ConfigError, match="two handlers for Ping"):
        asyncio.run(spawn_into(Twice()))


async def test_unspawned_actor_and_unstarted_bus_say_so() -> None:
    with pytest.raises(BusError, match="not spawned"):
        _ = Recorder().bus
    with pytest.raises(BusError, match="not started"):
        Bus().spawn(Recorder(), "PS1/Recorder")
    with pytest.raises(ConfigError, match="max_restarts"):
        Bus(max_restarts=-1)


async def test_start_task_right_after_spawn_runs_once_the_actor_is_up() -> None:
    class Producer(Actor):
        def __init__(self) -> None:
            self.started_first = False
            self.ready = False

        async def on_start(self) -> None:
            self.ready = True

        async def produce(self, count: int) -> None:
            self.started_first = self.ready
            for i in range(count):
                await self.send("PS1/Recorder", Ping(i))

    async with Bus(clock=ManualClock()) as bus:
        rec = bus.spawn(Recorder(), "PS1/Recorder")
        producer = bus.spawn(Producer(), "PS1/Producer")
        producer.start_task(producer.produce, 3)  # before the actor's task has even run
        await settle()
        assert rec.seen == [0, 1, 2]
        assert producer.started_first
    with pytest.raises(BusError, match="PS1/Producer is not running"):
        producer.start_task(producer.produce, 1)
