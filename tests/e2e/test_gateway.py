"""The WebSocket gateway against a real server process, with the `websockets` client library."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.server import Server, running_server
from tests.helpers import Agent, login, new_keypair

pytestmark = pytest.mark.e2e

ENV = {
    "CLAWLIST_REGISTRATION": "open",
    "CLAWLIST_GATEWAY_IDENTIFY_TIMEOUT_SECONDS": "1",
    "CLAWLIST_GATEWAY_SENDS_PER_SECOND": "5",
    "CLAWLIST_GATEWAY_SEND_BURST": "5",
    "CLAWLIST_GATEWAY_ABUSE_LIMIT": "8",
    "CLAWLIST_GATEWAY_OUTBOUND_QUEUE": "30",
    "CLAWLIST_GATEWAY_MAX_FRAME_BYTES": "4096",
    "CLAWLIST_GATEWAY_HEARTBEAT_INTERVAL_MS": "60000",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(Path(tmp_path_factory.mktemp("gw")), ENV) as srv:
        yield srv


async def agent(server: Server, handle: str) -> Agent:
    key, public = new_keypair()
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post("/api/v1/agents", json={"handle": handle, "public_key": public})
        assert r.status_code == 201, r.text
        a = Agent(r.json()["user_id"], key, public)
        await login(client, a)
    return a


async def rest(server: Server, a: Agent, method: str, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient(base_url=server.url, headers=a.headers) as client:
        r = await client.request(method, "/api/v1" + path, json=body)
        assert r.status_code < 300, r.text
        return r.json()


async def room_with(server: Server, owner: Agent, *members: Agent) -> str:
    room = (await rest(server, owner, "POST", "/rooms", {"name": "g", "visibility": "public"}))["room_id"]
    for m in members:
        await rest(server, m, "POST", f"/rooms/{room}/join")
    return str(room)


def ws_url(server: Server) -> str:
    return server.url.replace("http://", "ws://") + "/api/v1/gateway"


async def frame(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    return dict(orjson.loads(await asyncio.wait_for(ws.recv(), timeout)))


async def until(ws: ClientConnection, op: str, timeout: float = 5) -> dict[str, Any]:
    while True:
        f = await frame(ws, timeout)
        if f["op"] == op:
            return f


async def open_identified(server: Server, a: Agent, resume: int | None = None) -> ClientConnection:
    ws = await connect(ws_url(server), additional_headers=a.headers)
    hello = await frame(ws)
    assert hello["op"] == "hello" and hello["d"]["identified"] is True
    if resume is None:
        await ws.send(orjson.dumps({"op": "identify", "d": {}}).decode())
        assert (await until(ws, "ready"))["d"]["user_id"] == a.user_id
    else:
        await ws.send(orjson.dumps({"op": "resume", "d": {"position": resume}}).decode())
    return ws


async def test_send_ack_and_live_delivery(server: Server) -> None:
    alice, bob = await agent(server, "ga-alice"), await agent(server, "ga-bob")
    room = await room_with(server, alice, bob)
    a_ws, b_ws = await open_identified(server, alice), await open_identified(server, bob)
    try:
        content = {"msgtype": "m.text", "body": "over the gateway"}
        await a_ws.send(
            orjson.dumps({"op": "send", "d": {"txn_id": "t1", "room_id": room, "content": content}}).decode()
        )
        ack = await until(a_ws, "ack")
        assert ack["d"]["txn_id"] == "t1" and ack["d"]["event_id"].startswith("$")
        # a retry of the same txn is idempotent
        await a_ws.send(
            orjson.dumps({"op": "send", "d": {"txn_id": "t1", "room_id": room, "content": content}}).decode()
        )
        assert (await until(a_ws, "ack"))["d"]["event_id"] == ack["d"]["event_id"]
        got = await until(b_ws, "event")
        assert got["d"]["event_id"] == ack["d"]["event_id"] and got["d"]["position"] > 0
        assert got["d"]["content"]["body"] == "over the gateway"
        # typing reaches the other side
        await a_ws.send(orjson.dumps({"op": "typing", "d": {"room_id": room, "typing": True}}).decode())
        typing = await until(b_ws, "typing")
        assert typing["d"] == {"room_id": room, "user_ids": [alice.user_id]}
        await b_ws.send('{"op":"heartbeat"}')
        assert (await until(b_ws, "heartbeat_ack"))["op"] == "heartbeat_ack"
    finally:
        await a_ws.close()
        await b_ws.close()


async def test_frame_numbers_are_one_sequence_per_connection(server: Server) -> None:
    alice = await agent(server, "gq-alice")
    async with connect(ws_url(server), additional_headers=alice.headers) as ws:
        seqs = [(await frame(ws))["seq"]]  # hello
        await ws.send('{"op":"identify","d":{}}')
        await ws.send('{"op":"heartbeat"}')
        while True:  # every frame up to the heartbeat's answer: ready, presence, ...
            f = await frame(ws)
            seqs.append(f["seq"])
            if f["op"] == "heartbeat_ack":
                break
        assert seqs == list(range(1, len(seqs) + 1))


async def test_resume_replays_exactly_what_was_missed(server: Server) -> None:
    alice, bob = await agent(server, "gr-alice"), await agent(server, "gr-bob")
    room = await room_with(server, alice, bob)
    b_ws = await open_identified(server, bob)
    first = await rest(server, alice, "POST", f"/rooms/{room}/messages", {"txn_id": "r0", "body": "seen"})
    seen = await until(b_ws, "event")
    assert seen["d"]["event_id"] == first["event_id"]
    last_position = seen["d"]["position"]
    await b_ws.close()
    missed = [
        (await rest(server, alice, "POST", f"/rooms/{room}/messages", {"txn_id": f"r{i}", "body": f"m{i}"}))[
            "event_id"
        ]
        for i in range(1, 6)
    ]
    b_ws = await open_identified(server, bob, resume=last_position)
    try:
        got = [(await until(b_ws, "event"))["d"] for _ in missed]
        assert [e["event_id"] for e in got] == missed
        assert [e["position"] for e in got] == sorted(e["position"] for e in got)
        assert (await until(b_ws, "resumed"))["d"]["position"] >= got[-1]["position"]
        live = await rest(server, alice, "POST", f"/rooms/{room}/messages", {"txn_id": "r9", "body": "live"})
        assert (await until(b_ws, "event"))["d"]["event_id"] == live["event_id"]
    finally:
        await b_ws.close()


async def test_identify_in_a_frame_and_identify_timeout(server: Server) -> None:
    alice = await agent(server, "gi-alice")
    async with connect(ws_url(server)) as ws:
        assert (await frame(ws))["d"]["identified"] is False
        await ws.send('{"op":"send","d":{}}')
        assert (await until(ws, "error"))["d"]["errcode"] == "CL_NOT_IDENTIFIED"
        await ws.send(orjson.dumps({"op": "identify", "d": {"access_token": alice.access_token}}).decode())
        assert (await until(ws, "ready"))["d"]["user_id"] == alice.user_id
    async with connect(ws_url(server)) as ws:
        await frame(ws)
        with pytest.raises(ConnectionClosed) as info:
            await until(ws, "never", timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4001


async def test_bad_input_gets_error_frames_or_close_codes(server: Server) -> None:
    alice = await agent(server, "gb-alice")
    ws = await open_identified(server, alice)
    try:
        for raw, errcode in (
            ("not json", "M_NOT_JSON"),
            ("[1,2]", "M_BAD_JSON"),
            ('{"op":"nope"}', "M_UNRECOGNIZED"),
            ('{"op":"send","d":5}', "M_BAD_JSON"),
            ('{"op":"send","d":{"txn_id":"x"}}', "M_BAD_JSON"),
        ):
            await ws.send(raw)
            assert (await until(ws, "error"))["d"]["errcode"] == errcode, raw
        await ws.send(b"\x00\x01binary")
        assert (await until(ws, "error"))["d"]["errcode"] == "M_NOT_JSON"
        await ws.send(
            orjson.dumps(
                {
                    "op": "send",
                    "d": {
                        "txn_id": "x",
                        "room_id": "!nope:e2e.local",
                        "content": {"msgtype": "m.text", "body": "x"},
                    },
                }
            ).decode()
        )
        assert (await until(ws, "error"))["d"]["errcode"] in ("M_NOT_FOUND", "M_FORBIDDEN")
        # oversized frame: closed by the protocol (1009 message too big)
        await ws.send("x" * 10_000)
        with pytest.raises(ConnectionClosed) as info:
            await until(ws, "never", timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    finally:
        await ws.close()
    # bad token, position from the future, identify twice
    async with connect(ws_url(server), additional_headers={"Authorization": "Bearer nonsense"}) as bad:
        with pytest.raises(ConnectionClosed) as info:
            await until(bad, "never")
        assert info.value.rcvd is not None and info.value.rcvd.code == 4004
    ws = await open_identified(server, alice, resume=10**12)
    with pytest.raises(ConnectionClosed) as info:
        await until(ws, "never")
    assert info.value.rcvd is not None and info.value.rcvd.code == 4007
    ws = await open_identified(server, alice)
    await ws.send('{"op":"identify","d":{}}')
    with pytest.raises(ConnectionClosed) as info:
        await until(ws, "never")
    assert info.value.rcvd is not None and info.value.rcvd.code == 4005


async def test_rate_limit_then_close(server: Server) -> None:
    alice = await agent(server, "gl-alice")
    room = await room_with(server, alice)
    ws = await open_identified(server, alice)
    content = {"msgtype": "m.text", "body": "spam"}
    for i in range(30):
        await ws.send(
            orjson.dumps(
                {"op": "send", "d": {"txn_id": f"s{i}", "room_id": room, "content": content}}
            ).decode()
        )
    ops: list[str] = []
    with pytest.raises(ConnectionClosed) as info:
        while True:
            f = await frame(ws)
            ops.append(f["op"] if f["op"] != "error" else f["d"]["errcode"])
    assert "ack" in ops and "M_LIMIT_EXCEEDED" in ops
    assert info.value.rcvd is not None and info.value.rcvd.code == 4008


def raw_gateway_socket(server: Server, token: str) -> socket.socket:
    """A WebSocket client that does the handshake and identify by hand, then reads only when told."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /api/v1/gateway HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    assert sock.recv(12) == b"HTTP/1.1 101"
    payload, mask = b'{"op":"identify","d":{}}', os.urandom(4)
    sock.sendall(
        bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )
    return sock


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the unmasked frames a server sent; the tail may be cut off."""
    frames, i = [], data.index(b"\r\n\r\n") + 4
    while i + 2 <= len(data):
        opcode, length, i = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if length == 126:
            length, i = int.from_bytes(data[i : i + 2], "big"), i + 2
        elif length == 127:
            length, i = int.from_bytes(data[i : i + 8], "big"), i + 8
        frames.append((opcode, data[i : i + length]))
        i += length
    return frames


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def test_slow_consumer_is_dropped_with_a_resumable_close(server: Server) -> None:
    alice, bob = await agent(server, "gs-alice"), await agent(server, "gs-bob")
    room = await room_with(server, alice, bob)
    sock = raw_gateway_socket(server, bob.access_token)
    watcher = await open_identified(server, alice)

    async def watch() -> int:
        seen = 0
        while seen < 300:
            if (await until(watcher, "event", timeout=30))["d"]["sender"] == alice.user_id:
                seen += 1
        return seen

    watching = asyncio.create_task(watch())
    rss_before = rss_mb(server.process.pid)
    body = "y" * 40_000  # 300 x 40 KB: far more than the socket buffers and the 30-frame queue
    async with httpx.AsyncClient(base_url=server.url, headers=alice.headers) as client:
        for i in range(300):
            r = await client.post(f"/api/v1/rooms/{room}/messages", json={"txn_id": f"f{i}", "body": body})
            assert r.status_code == 200
    # bob reads again: what was queued, then a close frame with code 4010, then EOF
    data, deadline = b"", asyncio.get_running_loop().time() + 20
    sock.settimeout(1)
    while asyncio.get_running_loop().time() < deadline:
        try:
            chunk = await asyncio.to_thread(sock.recv, 1 << 20)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    sock.close()
    # others were unaffected: alice's own connection, reading all along, got every event
    assert await asyncio.wait_for(watching, 30) == 300
    await watcher.close()
    # the server let go of bob's backlog instead of buffering it (its ring of recent events is the
    # only thing that grows: 300 x 40 KB, bounded by feed_buffer_bytes)
    assert rss_mb(server.process.pid) - rss_before < 60
    frames = server_frames(data)
    closes = [payload for opcode, payload in frames if opcode == 0x8]
    assert closes and int.from_bytes(closes[0][:2], "big") == 4010, frames[-1][:1]
    positions = [orjson.loads(p)["d"]["position"] for op, p in frames if op == 0x1 and b'"op":"event"' in p]
    assert positions == sorted(positions)
    # ...and resumes from the last position it got, receiving the rest exactly once
    ws = await open_identified(server, bob, resume=positions[-1] if positions else 0)
    try:
        rest_ids = [(await until(ws, "event"))["d"]["event_id"] for _ in range(300 - len(positions))]
        assert len(set(rest_ids)) == len(rest_ids)
    finally:
        await ws.close()


async def test_disallowed_origin_is_refused(server: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(ws_url(server), origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403
