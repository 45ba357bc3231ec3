"""The bus dies mid-stream: two `clawlist serve` processes share PostgreSQL and a private Redis (or
NATS) server, which is SIGKILLed while agents on process B send and an agent on process A listens on
the gateway. Delivery goes on by polling the database within a bounded delay, nothing is lost, and
once the bus is back on the same port wake-ups (and low latency) return by themselves.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from tests.faults.support import (
    PrivateBus,
    ServerProcess,
    new_agent,
    open_gateway,
    pg_schema_env,
    public_room,
    room_history,
    send_until_acked,
    wait_for,
)
from tests.helpers import Agent

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(90)]

POLL_S = 0.5
#: A wake-up over the bus takes milliseconds; a poll up to POLL_S. "Fast" is well below a poll.
FAST_S = 0.1
FAST_IN_A_ROW = 8
#: Bound on delivery while the bus is down: one poll interval plus generous slack for a busy machine.
POLLED_BOUND_S = POLL_S + 1.0


class Receiver:
    """Records when each event of the room reaches the agent on process A."""

    def __init__(self, ws: ClientConnection, room: str) -> None:
        self.ws = ws
        self.room = room
        self.arrivals: dict[str, list[float]] = {}

    async def run(self) -> None:
        async for raw in self.ws:
            f = orjson.loads(raw)
            if f["op"] == "event" and f["d"]["room_id"] == self.room:
                self.arrivals.setdefault(f["d"]["event_id"], []).append(time.monotonic())


class Sender:
    """Sends on process B, alternating agents, remembering when each send was acknowledged."""

    def __init__(self, client: httpx.AsyncClient, agents: list[Agent], room: str, receiver: Receiver):
        self.client = client
        self.agents = itertools.cycle(agents)
        self.room = room
        self.receiver = receiver
        self.acked: dict[str, float] = {}
        self.send_seconds: dict[str, float] = {}
        self.count = itertools.count()

    async def send(self, label: str) -> str:
        n = next(self.count)
        started = time.monotonic()
        event_id = await send_until_acked(
            self.client, next(self.agents), self.room, f"{label}-{n}", f"{label} {n}", started + 10
        )
        self.acked[event_id] = time.monotonic()
        self.send_seconds[event_id] = self.acked[event_id] - started
        return event_id

    async def latency(self, event_id: str, timeout: float = 5) -> float:
        await wait_for(lambda: event_id in self.receiver.arrivals, timeout, f"delivery of {event_id}")
        return max(0.0, self.receiver.arrivals[event_id][0] - self.acked[event_id])

    async def until_fast(self, label: str, timeout: float) -> None:
        """Probe until FAST_IN_A_ROW sends in a row arrive faster than a poll could bring them."""
        deadline = time.monotonic() + timeout
        in_a_row = 0
        latencies: list[float] = []
        while in_a_row < FAST_IN_A_ROW:
            assert time.monotonic() < deadline, f"wake-ups did not return ({label}): {latencies[-20:]}"
            latencies.append(await self.latency(await self.send(label)))
            in_a_row = in_a_row + 1 if latencies[-1] < FAST_S else 0


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_delivery_survives_the_bus_dying_and_recovers(kind: str, tmp_path: Path) -> None:
    bus = PrivateBus(kind, tmp_path / "bus")
    servers: list[ServerProcess] = []
    async with pg_schema_env() as db_env:
        try:
            bus.start()
            env = {
                **db_env,
                "CLAWLIST_BUS_URL": bus.url,
                "CLAWLIST_FEED_POLL_INTERVAL_SECONDS": str(POLL_S),
                "CLAWLIST_GATEWAY_HEARTBEAT_INTERVAL_MS": "60000",
                "CLAWLIST_LOG_LEVEL": "warning",
            }
            servers += [ServerProcess(tmp_path / "a", env), ServerProcess(tmp_path / "b", env)]
            await servers[0].start()  # migrates the fresh schema first
            await servers[1].start()
            await _outage_scenario(kind, bus, servers[0], servers[1])
            for server in servers:
                assert server.alive()
                assert "Traceback" not in server.output(), server.output()[-3000:]
        finally:
            for server in servers:  # before the schema is dropped
                server.stop()
            bus.kill9()


async def _outage_scenario(kind: str, bus: PrivateBus, a: ServerProcess, b: ServerProcess) -> None:
    listener = await new_agent(a.url, f"bo-{kind}-listener")
    agents = [await new_agent(b.url, f"bo-{kind}-s{i}") for i in range(2)]
    room = await public_room(b.url, agents[0], agents[1], listener)
    ws, _ = await open_gateway(a.ws_url, listener)
    receiver = Receiver(ws, room)
    receiver_task = asyncio.create_task(receiver.run())
    try:
        async with httpx.AsyncClient(base_url=b.url, timeout=5) as client:
            sender = Sender(client, agents, room, receiver)
            # 1. The bus works: B's commits wake A at once.
            await sender.until_fast("up", 15)

            # 2. The bus is SIGKILLed mid-stream: polling delivers everything, in bounded time.
            before: list[str] = []
            during: list[str] = []
            for i in range(50):
                if i == 15:
                    bus.kill9()
                (before if i < 15 else during).append(await sender.send("stream"))
                await asyncio.sleep(0.04)
            await asyncio.sleep(1.0)
            during += [await sender.send("down") for _ in range(10)]
            polled = [await sender.latency(e) for e in during]
            assert max(polled) < POLLED_BOUND_S, polled
            # sends do not hang on the dead bus
            assert max(sender.send_seconds[e] for e in during) < 2.0
            for event_id in before:
                await sender.latency(event_id)

            # 3. The bus is back on the same port: both processes reconnect by themselves.
            bus.start()
            await sender.until_fast("recovery", 20)
            after = []
            for _ in range(20):
                after.append(await sender.send("after"))
                await asyncio.sleep(0.02)
            latencies = [await sender.latency(e, 2) for e in after]
            assert max(latencies) < 1.0, latencies
            assert statistics.median(latencies) < FAST_S, latencies

            # Nothing was lost or doubled: every acknowledged send reached A exactly once, and the
            # room's history holds exactly those messages.
            await asyncio.sleep(POLL_S * 2)
            assert set(sender.acked) - set(receiver.arrivals) == set()
            assert [e for e, times in receiver.arrivals.items() if len(times) > 1] == []
            history = await room_history(a.url, listener, room)
            messages = {e["event_id"] for e in history if e["type"] == "m.room.message"}
            assert messages == set(sender.acked) == set(receiver.arrivals)
    finally:
        receiver_task.cancel()
        await ws.close()
