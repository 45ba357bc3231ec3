"""A lean WebSocket subscriber for the fan-out benchmarks: an asyncio Protocol on uvloop that does
the handshake and frame parsing itself.

A general-purpose client library spends ~25 µs of Python per received frame; on a 2-core machine
that shares its cores with the server, a thousand of them would measure the load generator, not
the server. This one parses only what the benchmark needs: frame boundaries, the op, and the
`sent_at` stamp in message content (for send-to-receive latency).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

EVENT_PREFIX = b'{"op":"event"'
SENT_AT = b'"sent_at":'


def client_frame(payload: bytes) -> bytes:
    """A masked text frame (clients must mask)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class LeanSubscriber(asyncio.Protocol):
    """One gateway connection: identifies, then counts message events and their latencies."""

    def __init__(self, path: str, host: str, token: str, expected: int, latencies: list[float]) -> None:
        self.path, self.host, self.token = path, host, token
        self.expected = expected
        self.latencies = latencies
        self.received = 0
        self.last_at = 0.0  # wall-clock time of the last message received
        self.buffer = b""
        self.upgraded = False
        self.ready = asyncio.get_running_loop().create_future()
        self.done = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.heartbeat: asyncio.TimerHandle | None = None
        self.interval = 30.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {self.token}\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self._fail(f"handshake refused: {buffer[:80]!r}")
                return
            self.upgraded = True
            buffer = buffer[end + 4 :]
        now = time.time()
        offset, size = 0, len(buffer)
        while size - offset >= 2:
            length = buffer[offset + 1] & 0x7F
            start = offset + 2
            if length == 126:
                if size - offset < 4:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 4], "big")
                start = offset + 4
            elif length == 127:
                if size - offset < 10:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 10], "big")
                start = offset + 10
            if size - start < length:
                break
            opcode = buffer[offset] & 0x0F
            self._frame(opcode, buffer[start : start + length], now)
            offset = start + length
        self.buffer = buffer[offset:]

    def _frame(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == 0x8:
            self._fail(f"closed by the server: {payload[2:]!r}")
            return
        if opcode != 0x1:
            return
        if payload.startswith(EVENT_PREFIX):
            at = payload.find(SENT_AT)
            if at >= 0:
                end = at + len(SENT_AT)
                stop = end
                while payload[stop] not in b",}":
                    stop += 1
                self.latencies.append(now - float(payload[end:stop]))
                self.received += 1
                self.last_at = now
                if self.received >= self.expected and not self.done.done():
                    self.done.set_result(self.received)
            return
        frame: dict[str, Any] = orjson.loads(payload)
        op = frame.get("op")
        if op == "hello":
            self.interval = frame["d"]["heartbeat_interval_ms"] / 1000
            self._send({"op": "identify", "d": {}})
        elif op == "ready":
            self.ready.set_result(True)
            self._schedule_heartbeat()
        elif op == "error":
            self._fail(f"error frame: {frame['d']}")

    def _send(self, frame: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(orjson.dumps(frame)))

    def _schedule_heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        self.heartbeat = loop.call_later(self.interval / 2, self._beat)

    def _beat(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send({"op": "heartbeat", "d": {}})
            self._schedule_heartbeat()

    def _fail(self, reason: str) -> None:
        for future in (self.ready, self.done):
            if not future.done():
                future.set_exception(ConnectionError(reason))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        self._fail(f"connection lost: {exc}")

    def close(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        if self.transport is not None:
            self.transport.close()


async def connect(url: str, token: str, expected: int, latencies: list[float]) -> LeanSubscriber:
    """Open and identify one subscriber to `ws://host:port/path`; returns once it is ready."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: LeanSubscriber(parts.path, parts.netloc, token, expected, latencies),
        parts.hostname,
        parts.port,
    )
    await asyncio.wait_for(protocol.ready, 60)
    return protocol
