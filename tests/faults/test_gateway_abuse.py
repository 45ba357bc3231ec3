"""Abuse of the WebSocket gateway on a real server process: slow consumers, clients that vanish
mid-frame or mid-flood, positions that are not the client's own, frames before identify and plain
garbage. The server answers with error frames or close codes, keeps serving everyone else, and its
memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.faults.support import (
    ServerProcess,
    client_frame,
    dumps,
    frame,
    handshake,
    new_agent,
    open_gateway,
    public_room,
    rest,
    rss_mb,
    until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ENV = {
    "CLAWLIST_GATEWAY_IDENTIFY_TIMEOUT_SECONDS": "3",
    "CLAWLIST_GATEWAY_HEARTBEAT_INTERVAL_MS": "60000",
    "CLAWLIST_GATEWAY_OUTBOUND_QUEUE": "64",
    "CLAWLIST_GATEWAY_MAX_UNSENT_BYTES": "262144",
    "CLAWLIST_GATEWAY_MAX_FRAME_BYTES": "65536",
    "CLAWLIST_FEED_BUFFER_BYTES": "4194304",
    "CLAWLIST_LOG_LEVEL": "warning",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(Path(tmp_path_factory.mktemp("abuse")), ENV)
    try:
        asyncio.run(srv.start())
        yield srv
        assert srv.alive(), srv.output()[-3000:]
        assert "gateway connection failed" not in srv.output(), srv.output()[-3000:]
    finally:
        srv.stop()


async def healthy(server: ServerProcess) -> None:
    assert server.alive(), server.output()[-3000:]
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"{server.url}/health")).status_code == 200


def read_until_eof(
    sock: socket.socket, timeout: float = 15, limit: int = 1 << 20, *, must_close: bool = True
) -> bytes:
    """Everything the server sends until it closes the connection (bounded in time and size)."""
    data, deadline = b"", time.monotonic() + timeout
    sock.settimeout(0.5)
    while time.monotonic() < deadline and len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    if not must_close:
        return data
    raise AssertionError(f"the server did not close the connection (got {len(data)} bytes)")


def close_code(data: bytes) -> int | None:
    """The code of the close frame among the server's (unmasked) frames, if there is one."""
    i = 0
    while i + 2 <= len(data):
        opcode, length, i = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if length == 126:
            length, i = int.from_bytes(data[i : i + 2], "big"), i + 2
        elif length == 127:
            length, i = int.from_bytes(data[i : i + 8], "big"), i + 8
        if opcode == 0x8:
            return int.from_bytes(data[i : i + 2], "big") if length >= 2 else None
        i += length
    return None


def identify_raw(sock: socket.socket) -> None:
    sock.sendall(client_frame(b'{"op":"identify","d":{}}'))


async def read_events(ws: ClientConnection, count: int, timeout: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        f = await frame(ws, max(0.01, deadline - time.monotonic()))
        if f["op"] == "event" and f["d"]["type"] == "m.room.message":
            out.append(f["d"])
    return out


# -- slow and broken clients -----------------------------------------------------------------------

FLOOD = 300
BODY = "z" * 16_000
IDLE_CONNECTIONS = 30


async def test_slow_and_vanishing_clients_do_not_hurt_others(server: ServerProcess) -> None:
    sender = await new_agent(server.url, "ab-sender")
    watcher = await new_agent(server.url, "ab-watcher")
    idler = await new_agent(server.url, "ab-idler")
    breaker = await new_agent(server.url, "ab-breaker")
    room = await public_room(server.url, sender, watcher, idler, breaker)

    # Many connections that never read (slow consumers), with the client's own buffering kept small.
    idle = [
        (await open_gateway(server.ws_url, idler, max_queue=4, max_size=1 << 20))[0]
        for _ in range(IDLE_CONNECTIONS)
    ]
    watch, _ = await open_gateway(server.ws_url, watcher)
    # Clients that announce a 1000-byte frame, send 10 bytes of it, and close (or just hang there).
    half_frame = client_frame(b"0123456789", announce=1000)
    hanging: list[socket.socket] = []
    for n in range(6):
        sock = handshake(server.port, breaker.access_token)
        identify_raw(sock)
        sock.sendall(half_frame)
        if n % 2:
            sock.close()
        else:
            hanging.append(sock)
    # Clients that start reading the flood and then drop the TCP connection abruptly (RST).
    droppers = [handshake(server.port, breaker.access_token) for _ in range(4)]
    for sock in droppers:
        identify_raw(sock)

    def read_then_reset(sock: socket.socket, after: int) -> int:
        got, deadline = 0, time.monotonic() + 30
        sock.settimeout(0.5)
        while got < after and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            got += len(chunk)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        return got

    await healthy(server)
    await rest(server.url, sender, "POST", f"/rooms/{room}/messages", {"txn_id": "warm", "body": "warm"})
    await read_events(watch, 1, 10)
    rss_before = rss_mb(server.pid)

    dropping = [
        asyncio.create_task(asyncio.to_thread(read_then_reset, sock, 100_000 * (i + 1)))
        for i, sock in enumerate(droppers)
    ]
    watching = asyncio.create_task(read_events(watch, FLOOD, 60))
    sent: list[str] = []
    async with httpx.AsyncClient(base_url=server.url, headers=sender.headers, timeout=10) as client:

        async def send_range(start: int) -> None:
            for i in range(start, FLOOD, 4):
                r = await client.post(
                    f"/api/v1/rooms/{room}/messages", json={"txn_id": f"f{i}", "body": BODY}
                )
                assert r.status_code == 200, r.text
                sent.append(r.json()["event_id"])

        await asyncio.wait_for(asyncio.gather(*(send_range(k) for k in range(4))), 60)

    # The normal client got everything, once each, in order.
    got = await asyncio.wait_for(watching, 60)
    assert sorted(e["event_id"] for e in got) == sorted(sent)
    positions = [e["position"] for e in got]
    assert positions == sorted(set(positions))
    received = await asyncio.wait_for(asyncio.gather(*dropping), 40)
    assert all(n > 0 for n in received), received

    # Memory stayed bounded: the never-reading connections were cut off at their queue limits (64
    # frames, 256 KB unsent) instead of buffering the 4.8 MB flood each (30 x 4.8 = 144 MB).
    await asyncio.sleep(0.5)
    growth = rss_mb(server.pid) - rss_before
    assert growth < 60, f"server RSS grew by {growth:.0f} MB"
    await healthy(server)

    # ...and the server still serves new connections, live, after all this.
    fresh, _ = await open_gateway(server.ws_url, watcher)
    try:
        await rest(
            server.url, sender, "POST", f"/rooms/{room}/messages", {"txn_id": "after", "body": "after"}
        )
        assert (await read_events(fresh, 1, 10))[0]["content"]["body"] == "after"
    finally:
        await fresh.close()
        await watch.close()
        for sock in hanging:
            sock.close()
        await asyncio.gather(*(ws.close() for ws in idle), return_exceptions=True)


# -- positions that are not the client's own -------------------------------------------------------


async def test_resume_from_another_users_position_shows_only_ones_own_events(server: ServerProcess) -> None:
    alice = await new_agent(server.url, "pos-alice")
    bob = await new_agent(server.url, "pos-bob")
    carol = await new_agent(server.url, "pos-carol")
    shared = await public_room(server.url, bob, alice)
    secret = (
        await rest(
            server.url,
            bob,
            "POST",
            "/rooms",
            {"name": "s", "visibility": "private", "invite": [carol.user_id]},
        )
    )["room_id"]
    await rest(server.url, carol, "POST", f"/rooms/{secret}/join")

    # Bob's session sees the secret room's events; remember a position he saw.
    bob_ws, _ = await open_gateway(server.ws_url, bob)
    secrets_ids = [
        (
            await rest(
                server.url, carol, "POST", f"/rooms/{secret}/messages", {"txn_id": f"s{i}", "body": "psst"}
            )
        )["event_id"]
        for i in range(3)
    ]
    shared_ids = [
        (await rest(server.url, bob, "POST", f"/rooms/{shared}/messages", {"txn_id": f"h{i}", "body": "hi"}))[
            "event_id"
        ]
        for i in range(2)
    ]
    seen = await read_events(bob_ws, 5, 10)
    await bob_ws.close()
    bobs_position = next(e["position"] for e in seen if e["room_id"] == secret)
    assert {e["event_id"] for e in seen} == set(secrets_ids + shared_ids)

    for position in (bobs_position, bobs_position - 1, 0):
        ws, _ = await open_gateway(server.ws_url, alice, resume=position)
        try:
            frames = []
            while (f := await frame(ws))["op"] != "resumed":
                frames.append(f)
            events = [f["d"] for f in frames if f["op"] == "event"]
            assert all(e["room_id"] != secret for e in events), events
            assert all(carol.user_id not in (e["sender"], e.get("state_key")) for e in events)
            assert {e["event_id"] for e in events} >= set(shared_ids)
            # live, too: the secret room stays invisible, the shared one arrives
            await rest(
                server.url,
                carol,
                "POST",
                f"/rooms/{secret}/messages",
                {"txn_id": f"x{position}", "body": "x"},
            )
            mine = await rest(
                server.url, bob, "POST", f"/rooms/{shared}/messages", {"txn_id": f"y{position}", "body": "y"}
            )
            live = await until(ws, "event")
            assert live["d"]["event_id"] == mine["event_id"], live
        finally:
            await ws.close()


async def test_positions_outside_the_stream_close_with_4007(server: ServerProcess) -> None:
    alice = await new_agent(server.url, "fut-alice")
    ws, ready = await open_gateway(server.ws_url, alice)
    assert ready is not None
    head = ready["d"]["position"]
    await ws.close()
    for position in (head + 1000, 10**12, -1, 2**63, "12", None, 1.5):
        async with connect(server.ws_url, additional_headers=alice.headers) as ws:
            await frame(ws)
            await ws.send(dumps({"op": "resume", "d": {"position": position}}))
            with pytest.raises(ConnectionClosed) as info:
                await until(ws, "never")
            assert info.value.rcvd is not None and info.value.rcvd.code == 4007, position
    await healthy(server)


# -- frames before identify ------------------------------------------------------------------------


async def test_frames_before_identify_get_error_frames(server: ServerProcess) -> None:
    alice = await new_agent(server.url, "pre-alice")
    room = await public_room(server.url, alice)
    for headers in ({}, alice.headers):
        async with connect(server.ws_url, additional_headers=headers) as ws:
            assert (await frame(ws))["d"]["identified"] is bool(headers)
            for raw, errcode in (
                (
                    dumps({"op": "send", "d": {"txn_id": "t", "room_id": room, "content": {"body": "x"}}}),
                    "CL_NOT_IDENTIFIED",
                ),
                ('{"op":"subscribe","d":{"rooms":[]}}', "CL_NOT_IDENTIFIED"),
                ('{"op":"nope"}', "CL_NOT_IDENTIFIED"),
                ("not json", "M_NOT_JSON"),
                ('"a string"', "M_BAD_JSON"),
                ('{"op":"identify","d":[1]}', "M_BAD_JSON"),
            ):
                await ws.send(raw)
                f = await until(ws, "error")
                assert f["d"]["errcode"] == errcode, (raw, f)
            await ws.send(b"\x00\x01binary")
            assert (await until(ws, "error"))["d"]["errcode"] == "M_NOT_JSON"
            await ws.send('{"op":"heartbeat"}')
            await until(ws, "heartbeat_ack")
            await ws.send(dumps({"op": "identify", "d": {"access_token": alice.access_token}}))
            assert (await until(ws, "ready"))["d"]["user_id"] == alice.user_id
    # The send before identify was not performed.
    async with httpx.AsyncClient(base_url=server.url, headers=alice.headers) as client:
        r = await client.get(f"/api/v1/rooms/{room}/messages", params={"dir": "f", "limit": 100})
        assert [e for e in r.json()["chunk"] if e["type"] == "m.room.message"] == []
    # resume without any token: closed with 4004, nothing else
    async with connect(server.ws_url) as ws:
        await frame(ws)
        await ws.send('{"op":"resume","d":{"position":0}}')
        with pytest.raises(ConnectionClosed) as info:
            await until(ws, "never")
        assert info.value.rcvd is not None and info.value.rcvd.code == 4004


# -- garbage ---------------------------------------------------------------------------------------


async def test_garbage_never_crashes_the_server(server: ServerProcess) -> None:
    alice = await new_agent(server.url, "junk-alice")
    room = await public_room(server.url, alice)
    token = alice.access_token

    # Not HTTP at all, and half an HTTP request: the connection is dropped.
    for junk in (os.urandom(4096), b"GET /api/v1/gateway HTTP/1.1\r\nHost: x\r\nUpgr"):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(junk)
        if junk.startswith(b"GET"):
            sock.close()
        else:
            read_until_eof(sock)
            sock.close()
        await healthy(server)

    # After the handshake: (bytes to send, close codes the protocol allows for them)
    cases: list[tuple[bytes, set[int | None]]] = [
        (bytes([0x81, 0x05]) + b"hello", {1002}),  # unmasked client frame
        (client_frame(b"\xff\xfe\xfd"), {1007}),  # text that is not UTF-8
        (client_frame(b"", announce=2**62), {1009}),  # announces an absurd length
        (client_frame(b"p" * 200, opcode=0x9), {1002}),  # control frame over 125 bytes
        (client_frame(b"x", opcode=0x3), {1002}),  # reserved opcode
        (bytes([0xF1, 0x81]) + os.urandom(5), {1002}),  # reserved bits set
        (client_frame(b"y" * 70_000), {1009}),  # over gateway_max_frame_bytes
    ]
    for identified in (False, True):
        for junk, codes in cases:
            sock = handshake(server.port, token)
            if identified:
                identify_raw(sock)
            sock.sendall(junk)
            data = read_until_eof(sock)
            sock.close()
            assert close_code(data) in codes, (identified, junk[:8], data)
            await healthy(server)

    # Random bytes after the handshake (fixed seeds): the server closes, or waits for the rest of a
    # frame the bytes happen to announce; either way the client hangs up and the server lives on.
    rng = random.Random(20240601)
    for n in range(24):
        sock = handshake(server.port, token)
        if n % 2:
            identify_raw(sock)
        with contextlib.suppress(OSError):
            sock.sendall(rng.randbytes(rng.randint(1, 65536)))
            read_until_eof(sock, timeout=0.5, must_close=False)
        sock.close()
    await healthy(server)

    # A fragmented message that grows past the frame limit, a dozen bytes at a time.
    sock = handshake(server.port, token)
    identify_raw(sock)
    first = client_frame(b"a" * 60_000)
    sock.sendall(bytes([first[0] & 0x7F]) + first[1:])  # FIN clear: more to come
    try:
        for _ in range(20):
            cont = client_frame(b"b" * 10_000, opcode=0x0)
            sock.sendall(bytes([cont[0] & 0x7F]) + cont[1:])
    except OSError:
        pass  # the server already closed it
    data = read_until_eof(sock)
    sock.close()
    assert close_code(data) == 1009
    await healthy(server)

    # Everyone else is still served: identify, send, receive.
    ws, _ = await open_gateway(server.ws_url, alice)
    try:
        await ws.send(
            dumps(
                {
                    "op": "send",
                    "d": {"txn_id": "ok", "room_id": room, "content": {"msgtype": "m.text", "body": "fine"}},
                }
            )
        )
        ack = await until(ws, "ack")
        event = await until(ws, "event")
        assert event["d"]["event_id"] == ack["d"]["event_id"]
    finally:
        await ws.close()
    assert "gateway connection failed" not in server.output(), server.output()[-3000:]
