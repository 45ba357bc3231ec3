"""`kill -9` of the server in the middle of a burst of sends, on SQLite and PostgreSQL.

Several clients send 2,000 messages and retry each one (same txn_id) until it is acknowledged; the
server is SIGKILLed after ~600 acks and started again on the same data and port. Afterwards every
acknowledged send is stored exactly once, and a gateway subscriber that was connected before the
burst and resumes from its last position sees every event exactly once, in order, with no gap.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.faults.support import (
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

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TOTAL = 2000
KILL_AFTER = 600
SENDERS = 4
WORKERS = 12
BURST_SECONDS = 60.0

ENV = {
    "CLAWLIST_GATEWAY_HEARTBEAT_INTERVAL_MS": "60000",
    "CLAWLIST_LOG_LEVEL": "warning",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_env(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {}
        return
    async with pg_schema_env() as env:
        yield env


class Subscriber:
    """A gateway client that records every event and, when the connection dies, resumes from the
    last position it saw (retrying the connection within a bounded time)."""

    def __init__(self, server: ServerProcess, agent: Agent, deadline: float) -> None:
        self.server = server
        self.agent = agent
        self.deadline = deadline
        self.events: list[dict[str, Any]] = []
        self.start_position = 0
        self.position = 0
        self.resumes = 0
        self.closes: list[int | None] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        ws, ready = await open_gateway(self.server.ws_url, self.agent)
        assert ready is not None
        self.start_position = self.position = int(ready["d"]["position"])
        self.ready.set()
        while time.monotonic() < self.deadline:
            try:
                raw = await asyncio.wait_for(ws.recv(), 1)
            except TimeoutError:
                continue
            except ConnectionClosed as closed:
                self.closes.append(closed.rcvd.code if closed.rcvd is not None else None)
                ws = await self._resume()
                continue
            f = orjson.loads(raw)
            if f["op"] == "event":
                position = int(f["d"]["position"])
                assert position > self.position, f"position {position} after {self.position}"
                self.position = position
                self.events.append(f["d"])
        raise AssertionError("the subscriber ran out of time")

    async def _resume(self) -> ClientConnection:
        delay = 0.05
        while time.monotonic() < self.deadline:
            try:
                ws, _ = await open_gateway(self.server.ws_url, self.agent, resume=self.position)
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            self.resumes += 1
            return ws
        raise AssertionError("the subscriber could not reconnect in time")


async def test_acknowledged_sends_survive_kill9_exactly_once(tmp_path: Path, db_env: dict[str, str]) -> None:
    server = ServerProcess(tmp_path, {**ENV, **db_env})
    deadline = time.monotonic() + BURST_SECONDS
    try:
        await server.start()
        senders = [await new_agent(server.url, f"k9-sender{i}") for i in range(SENDERS)]
        watcher = await new_agent(server.url, "k9-watcher")
        room = await public_room(server.url, senders[0], *senders[1:], watcher)

        subscriber = Subscriber(server, watcher, deadline + 30)
        sub_task = asyncio.create_task(subscriber.run())
        await asyncio.wait_for(subscriber.ready.wait(), 10)

        acks: dict[int, str] = {}
        indexes = iter(range(TOTAL))

        async def worker() -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
                for i in indexes:
                    sender = senders[i % SENDERS]
                    acks[i] = await send_until_acked(client, sender, room, f"k{i}", f"burst-{i}", deadline)

        kill_info: dict[str, int] = {}

        async def killer() -> None:
            await wait_for(lambda: len(acks) >= KILL_AFTER, 30, f"{KILL_AFTER} acks")
            kill_info["acked_before_kill"] = len(acks)
            server.kill9()
            kill_info["acked_while_down"] = len(acks)
            await server.start()

        workers = [asyncio.create_task(worker()) for _ in range(WORKERS)]
        try:
            await asyncio.wait_for(asyncio.gather(killer(), *workers), BURST_SECONDS + 5)
        finally:
            for task in workers:
                task.cancel()

        # The kill landed in the middle of the burst, and every send was acknowledged in the end.
        assert KILL_AFTER <= kill_info["acked_before_kill"] < TOTAL - 200, kill_info
        assert server.starts == 2
        assert sorted(acks) == list(range(TOTAL))
        assert len(set(acks.values())) == TOTAL, "two sends were answered with the same event"

        # Every acknowledged send is stored exactly once: by body, by event id, and by txn id.
        history = await room_history(server.url, watcher, room)
        burst = [e for e in history if str(e["content"].get("body", "")).startswith("burst-")]
        bodies = Counter(e["content"]["body"] for e in burst)
        assert [b for b, n in bodies.items() if n > 1] == []
        assert len(burst) == TOTAL
        by_body = {e["content"]["body"]: e["event_id"] for e in burst}
        assert all(by_body[f"burst-{i}"] == event_id for i, event_id in acks.items())
        positions = [e["position"] for e in history]
        assert positions == sorted(set(positions))
        for n, sender in enumerate(senders):
            own = [e for e in await room_history(server.url, sender, room) if e["sender"] == sender.user_id]
            txns = Counter(e["unsigned"]["transaction_id"] for e in own if e["type"] == "m.room.message")
            assert [t for t, c in txns.items() if c > 1] == [], f"a txn_id stored twice for {sender.user_id}"
            assert set(txns) == {f"k{i}" for i in range(n, TOTAL, SENDERS)}

        # The subscriber resumed after the restart and saw every later event exactly once, no gap.
        expected_ids = {e["event_id"] for e in history if e["position"] > subscriber.start_position}

        def seen_ids() -> set[str]:
            return {e["event_id"] for e in subscriber.events if e["room_id"] == room}

        await wait_for(lambda: expected_ids <= seen_ids() or sub_task.done(), 30, "the subscriber")
        await asyncio.sleep(0.5)  # anything extra (a duplicate) would arrive now
        if sub_task.done():
            sub_task.result()  # re-raise its failure
        sub_task.cancel()
        assert subscriber.resumes >= 1, subscriber.closes
        got = [e["event_id"] for e in subscriber.events if e["room_id"] == room]
        assert len(got) == len(set(got)), "an event was delivered twice"
        assert set(got) == expected_ids
        sub_positions = [e["position"] for e in subscriber.events]
        assert all(a < b for a, b in itertools.pairwise(sub_positions))
        output = server.output()
        assert "write batch failed" not in output and "gateway connection failed" not in output, output
    finally:
        server.stop()
