"""Two real `clawlist serve` processes sharing PostgreSQL and a bus (Redis, then NATS).

The feed's database poll is set to 30 s, so timely delivery across processes proves the bus
wakes the other process; the database remains the source of every event.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import (
    NATS_URL,
    PG_URL,
    REDIS_URL,
    _drop_schema,
    require_nats,
    require_postgres,
    require_redis,
)
from tests.e2e.server import Server, running_server
from tests.helpers import Agent, login, new_keypair

pytestmark = pytest.mark.e2e

MESSAGES_PER_SENDER = 500


@pytest.fixture(params=["redis", "nats"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Server, Server]]:
    require_postgres()
    (require_redis if request.param == "redis" else require_nats)()
    schema = "scale_" + secrets.token_hex(5)
    env = {
        "CLAWLIST_DATABASE_URL": PG_URL,
        "CLAWLIST_DATABASE_SCHEMA": schema,
        "CLAWLIST_BUS_URL": REDIS_URL if request.param == "redis" else NATS_URL,
        "CLAWLIST_REGISTRATION": "open",
        "CLAWLIST_FEED_POLL_INTERVAL_SECONDS": "30",
        "CLAWLIST_GATEWAY_OUTBOUND_QUEUE": "5000",
    }
    try:
        with running_server(tmp_path / "a", env) as a, running_server(tmp_path / "b", env) as b:
            yield a, b
    finally:
        await _drop_schema(schema)


async def agent(server: Server, handle: str) -> Agent:
    key, public = new_keypair()
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post("/api/v1/agents", json={"handle": handle, "public_key": public})
        assert r.status_code == 201, r.text
        a = Agent(r.json()["user_id"], key, public)
        await login(client, a)
    return a


def ws_url(server: Server) -> str:
    return server.url.replace("http://", "ws://") + "/api/v1/gateway"


async def until(ws: ClientConnection, op: str, timeout: float = 10) -> dict[str, Any]:
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
        if frame["op"] == op:
            return dict(frame)


async def identified(server: Server, a: Agent, resume: int | None = None) -> ClientConnection:
    ws = await connect(ws_url(server), additional_headers=a.headers, max_size=None)
    await until(ws, "hello")
    if resume is None:
        await ws.send('{"op":"identify","d":{}}')
        await until(ws, "ready")
    else:
        await ws.send(orjson.dumps({"op": "resume", "d": {"position": resume}}).decode())
    return ws


async def send_many(server: Server, sender: Agent, room: str, n: int, tag: str) -> list[str]:
    ids = []
    async with httpx.AsyncClient(base_url=server.url, headers=sender.headers, timeout=30) as client:
        for i in range(n):
            r = await client.post(
                f"/api/v1/rooms/{room}/messages", json={"txn_id": f"{tag}{i}", "body": f"{tag} {i}"}
            )
            assert r.status_code == 200, r.text
            ids.append(r.json()["event_id"])
    return ids


async def test_messages_typing_presence_and_resume_cross_processes(pair: tuple[Server, Server]) -> None:
    a, b = pair
    alice, bob, carol = await agent(a, "alice"), await agent(b, "bob"), await agent(b, "carol")
    async with httpx.AsyncClient(base_url=a.url, headers=alice.headers) as client:
        room = (await client.post("/api/v1/rooms", json={"name": "x", "visibility": "public"})).json()[
            "room_id"
        ]
    for who in (bob, carol):
        async with httpx.AsyncClient(base_url=b.url, headers=who.headers) as client:
            assert (await client.post(f"/api/v1/rooms/{room}/join")).status_code == 200

    # 1,000 messages sent through process B reach alice on process A, in order, none missing
    ws = await identified(a, alice)
    received: list[dict[str, Any]] = []

    async def receive(n: int) -> None:
        while len(received) < n:
            frame = await until(ws, "event", timeout=10)
            if frame["d"]["type"] == "m.room.message":
                received.append(frame["d"])

    started = time.monotonic()
    receiving = asyncio.create_task(receive(2 * MESSAGES_PER_SENDER))
    bob_ids, carol_ids = await asyncio.gather(
        send_many(b, bob, room, MESSAGES_PER_SENDER, "b"), send_many(b, carol, room, MESSAGES_PER_SENDER, "c")
    )
    await asyncio.wait_for(receiving, 60)
    took = time.monotonic() - started
    positions = [e["position"] for e in received]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    got_ids = [e["event_id"] for e in received]
    assert set(got_ids) == set(bob_ids) | set(carol_ids)
    assert [i for i in got_ids if i in set(bob_ids)] == bob_ids  # each sender's order kept
    assert took < 25, f"took {took:.1f}s: wake-ups did not cross processes (the poll is 30 s)"

    # typing and presence set on process B reach alice on process A
    async with httpx.AsyncClient(base_url=b.url, headers=bob.headers) as client:
        r = await client.post(f"/api/v1/rooms/{room}/typing", json={"typing": True, "timeout_ms": 10000})
        assert r.status_code == 200
        typing = await until(ws, "typing")
        assert bob.user_id in typing["d"]["user_ids"]
        r = await client.put("/api/v1/presence", json={"presence": "unavailable", "status_msg": "away"})
        assert r.status_code == 200
        while True:
            presence = await until(ws, "presence")
            if presence["d"]["user_id"] == bob.user_id and presence["d"]["presence"] == "unavailable":
                break

    # alice drops her connection to A; more messages are sent on A; she resumes on B
    last = positions[-1]
    await ws.close()
    missed = await send_many(a, carol, room, 20, "m")
    ws = await identified(b, alice, resume=last)
    try:
        replayed = []
        while len(replayed) < len(missed):
            frame = await until(ws, "event")
            replayed.append(frame["d"]["event_id"])
        assert replayed == missed
        await until(ws, "resumed")
    finally:
        await ws.close()

    # a sync token from one process works on the other
    async with httpx.AsyncClient(base_url=a.url, headers=alice.headers, timeout=30) as client_a:
        token = (await client_a.get("/api/v1/sync")).json()["next_batch"]
    late = (await send_many(a, bob, room, 1, "late"))[0]
    async with httpx.AsyncClient(base_url=b.url, headers=alice.headers, timeout=30) as client_b:
        body = (await client_b.get("/api/v1/sync", params={"since": token, "timeout": 10000})).json()
    assert late in [e["event_id"] for e in body["rooms"][room]["timeline"]]
