"""The WebSocket gateway, `/api/v1/gateway`: live events, sends with acks, typing, presence.

Frames are JSON text `{op, d, seq}`. The protocol and its close codes are in docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect, WebSocketState
from websockets.protocol import State

from clawlist.actions import auth, messages, signals
from clawlist.actions.actor import Actor
from clawlist.actions.live import FrameSink, LiveSession, SlowConsumer
from clawlist.actions.services import Services
from clawlist.core.errors import ClawlistError
from clawlist.core.gateway_protocol import (
    CLOSE_ALREADY_IDENTIFIED,
    CLOSE_AUTH_FAILED,
    CLOSE_BAD_POSITION,
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_NOT_IDENTIFIED,
    CLOSE_ORIGIN,
    CLOSE_RATE_LIMITED,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_UNKNOWN,
)
from clawlist.core.rate import TokenBucket

log = logging.getLogger(__name__)
router = APIRouter()
RAW_SEND_KEY = "clawlist.raw_send"

CLOSE_TIMEOUT_S = 10.0


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _origin_allowed(svc: Services, origin: str | None) -> bool:
    if origin is None:
        return True  # not a browser
    allowed = svc.settings.gateway_allowed_origins
    return "*" in allowed or origin.rstrip("/") in {o.rstrip("/") for o in allowed}


@router.websocket("/api/v1/gateway")
async def gateway(ws: WebSocket) -> None:
    svc: Services = ws.app.state.services
    if not _origin_allowed(svc, ws.headers.get("origin")):
        await ws.close(code=CLOSE_ORIGIN, reason="origin not allowed")
        return
    await ws.accept()
    connection = _Connection(svc, ws)
    try:
        await connection.run()
    except _Close as close:
        await connection.close(close.code, close.reason)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("gateway connection failed")
        await connection.close(CLOSE_UNKNOWN, "internal error")
    finally:
        await connection.finish()


class _Connection:
    def __init__(self, svc: Services, ws: WebSocket) -> None:
        self.svc = svc
        self.ws = ws
        self.settings = svc.settings
        self.actor: Actor | None = None
        self.session: LiveSession | None = None
        self.bucket = TokenBucket.full(
            self.settings.gateway_sends_per_second, self.settings.gateway_send_burst, time.monotonic()
        )
        self.violations = 0
        self.last_heartbeat = asyncio.get_running_loop().time()
        self.seq = 0
        self._tasks: list[asyncio.Task[None]] = []

    # -- plumbing
    async def send(self, op: str, data: Any) -> None:
        if self.session is not None:
            self.session.frame(op, data)
            return
        self.seq += 1
        await self._transmit(orjson.dumps({"op": op, "seq": self.seq, "d": data}).decode())

    async def _transmit(self, text: str) -> None:
        """Send one text frame. The server's protocol layer may have closed the connection already
        (it answers a client's protocol error, such as invalid UTF-8 or an oversized frame, with a
        close frame of its own) and then refuses any send with a RuntimeError: that is the client
        going away, not an internal error."""
        try:
            await self.ws.send_text(text)
        except RuntimeError as exc:
            raise WebSocketDisconnect(1006) from exc

    async def error(self, errcode: str, message: str, **extra: Any) -> None:
        await self.send("error", {"errcode": errcode, "error": message, **extra})

    async def close(self, code: int, reason: str) -> None:
        if self.ws.application_state != WebSocketState.CONNECTED:
            return
        try:
            # A slow consumer's close frame waits behind its backlog: it gets CLOSE_TIMEOUT_S to read
            # it, then the connection is dropped (it sees 1006 and resumes all the same).
            await asyncio.wait_for(self.ws.close(code=code, reason=reason), CLOSE_TIMEOUT_S)
        except Exception:
            transport = getattr(getattr(self.ws.scope.get(RAW_SEND_KEY), "__self__", None), "transport", None)
            if transport is not None:
                transport.abort()

    async def finish(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.session is not None:
            self.session.close()
            if self.actor is not None and self.actor.is_agent:
                with contextlib.suppress(Exception):
                    await signals.mark_offline(self.svc, self.actor.principal_id)

    async def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next well-formed frame; malformed ones get an error frame and are skipped."""
        while True:
            message = await asyncio.wait_for(self.ws.receive(), timeout)
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("bytes") is not None:
                await self.error("M_NOT_JSON", "binary frames are not supported; send JSON text")
                continue
            try:
                frame = orjson.loads(message.get("text") or "")
            except orjson.JSONDecodeError:
                await self.error("M_NOT_JSON", "frame is not valid JSON")
                continue
            if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
                await self.error("M_BAD_JSON", "a frame is an object with a string 'op'")
                continue
            if frame.get("d") is not None and not isinstance(frame.get("d"), dict):
                await self.error("M_BAD_JSON", "'d' must be an object")
                continue
            return frame

    # -- the connection's life
    async def run(self) -> None:
        token = _bearer(self.ws)
        if token is not None:
            self.actor = await self._authenticate(token)
        await self.send(
            "hello",
            {
                "heartbeat_interval_ms": self.settings.gateway_heartbeat_interval_ms,
                "identified": self.actor is not None,
            },
        )
        resume_from = await self._identify()
        assert self.actor is not None
        self.session = LiveSession(
            self.svc, self.actor, max_queue=self.settings.gateway_outbound_queue, seq=self.seq
        )
        try:
            head = await self.session.start(resume_from)
        except ClawlistError as exc:
            raise _Close(CLOSE_BAD_POSITION, exc.message[:120]) from exc
        if resume_from is None:
            self.session.frame(
                "ready",
                {
                    "user_id": self.actor.principal_id,
                    "session_id": self.actor.session_id,
                    "position": head,
                    "rooms": sorted(self.session.viewer.joined),
                },
            )
        if self.actor.is_agent:
            await signals.mark_active(self.svc, self.actor.principal_id)
        self._tasks = [
            asyncio.create_task(self._writer()),
            asyncio.create_task(self._watchdog()),
            asyncio.create_task(self._overflow_watch()),
        ]
        reader = asyncio.create_task(self._reader())
        done, _ = await asyncio.wait([reader, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        reader.cancel()
        for task in self._tasks:
            task.cancel()
        for task in done:
            failure = task.exception()
            if failure is not None:
                raise failure

    async def _authenticate(self, token: str) -> Actor:
        try:
            return await auth.authenticate(self.svc, token)
        except ClawlistError as exc:
            code = CLOSE_TOKEN_EXPIRED if "expired" in exc.message else CLOSE_AUTH_FAILED
            raise _Close(code, exc.message[:120]) from exc

    async def _identify(self) -> int | None:
        """Wait for `identify` or `resume` (within the identify timeout). Returns the resume position."""
        deadline = asyncio.get_running_loop().time() + self.settings.gateway_identify_timeout_seconds
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise _Close(CLOSE_NOT_IDENTIFIED, "identify within the timeout")
            try:
                frame = await self.receive(remaining)
            except TimeoutError as exc:
                raise _Close(CLOSE_NOT_IDENTIFIED, "identify within the timeout") from exc
            assert frame is not None
            op, data = frame["op"], frame.get("d") or {}
            if op == "heartbeat":
                await self.send("heartbeat_ack", {})
                continue
            if op not in ("identify", "resume"):
                await self.error("CL_NOT_IDENTIFIED", f"send identify or resume before {op!r}")
                continue
            token = data.get("access_token")
            if token is not None:
                if not isinstance(token, str):
                    raise _Close(CLOSE_AUTH_FAILED, "access_token must be a string")
                actor = await self._authenticate(token)
                if self.actor is not None and actor.principal_id != self.actor.principal_id:
                    raise _Close(CLOSE_AUTH_FAILED, "token does not match the handshake's")
                self.actor = actor
            if self.actor is None:
                raise _Close(
                    CLOSE_AUTH_FAILED, "no access token: use the Authorization header or access_token"
                )
            if op == "identify":
                return None
            position = data.get("position")
            if not isinstance(position, int) or isinstance(position, bool):
                raise _Close(CLOSE_BAD_POSITION, "resume needs an integer 'position'")
            return position

    async def _writer(self) -> None:
        assert self.session is not None
        self.session.sink = direct_sink(self.ws, self.settings.gateway_max_unsent_bytes)
        try:
            limit = self.settings.gateway_max_unsent_bytes
            while True:
                for frame in await self.session.next_frames():
                    await self._transmit(frame.decode())
                self.session.transmitted()
                backlog = unsent_bytes(self.ws)
                if backlog is not None and backlog > limit:
                    raise SlowConsumer
        except SlowConsumer as exc:
            raise _Close(
                CLOSE_SLOW_CONSUMER, f"too slow; resume from position {self._resume_hint()}"
            ) from exc

    def _resume_hint(self) -> int:
        return 0 if self.session is None else self.session.delivered_floor

    async def _overflow_watch(self) -> None:
        """Close a client that stopped reading, even while the writer is stuck sending to it."""
        assert self.session is not None
        await self.session.overflow.wait()
        raise _Close(CLOSE_SLOW_CONSUMER, f"too slow; resume from position {self._resume_hint()}")

    async def _watchdog(self) -> None:
        interval = self.settings.gateway_heartbeat_interval_ms / 1000
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval / 2)
            if loop.time() - self.last_heartbeat > interval * 2:
                raise _Close(CLOSE_HEARTBEAT_TIMEOUT, "no heartbeat")

    async def _reader(self) -> None:
        while True:
            frame = await self.receive()
            assert frame is not None
            await self._handle(frame["op"], frame.get("d") or {})

    async def _handle(self, op: str, data: dict[str, Any]) -> None:
        assert self.session is not None and self.actor is not None
        self.last_heartbeat = asyncio.get_running_loop().time()
        if op == "heartbeat":
            await self.send("heartbeat_ack", {"position": self.session.cursor})
        elif op in ("identify", "resume"):
            raise _Close(CLOSE_ALREADY_IDENTIFIED, "already identified")
        elif op == "send":
            await self._send(data)
        elif op in ("subscribe", "unsubscribe"):
            rooms = data.get("rooms")
            if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
                await self.error("M_BAD_JSON", f"{op} needs 'rooms': a list of room ids")
                return
            try:
                if op == "subscribe":
                    now = self.session.subscribe(rooms, self.settings.gateway_max_subscriptions)
                else:
                    now = self.session.unsubscribe(rooms)
            except ClawlistError as exc:
                await self.error(exc.errcode, exc.message)
                return
            await self.send("subscriptions", {"rooms": now})
        elif op == "typing":
            await self._call(
                signals.set_typing(
                    self.svc,
                    self.actor,
                    str(data.get("room_id", "")),
                    data.get("typing", True),
                    data.get("timeout_ms"),
                )
            )
        elif op == "presence":
            await self._call(
                signals.set_presence(
                    self.svc, self.actor, str(data.get("presence", "online")), data.get("status_msg")
                )
            )
        else:
            await self.error("M_UNRECOGNIZED", f"unknown op {op!r}")

    async def _call(self, coro: Any) -> None:
        try:
            await coro
        except ClawlistError as exc:
            await self.error(exc.errcode, exc.message)

    async def _send(self, data: dict[str, Any]) -> None:
        assert self.actor is not None
        txn_id = data.get("txn_id")
        wait = self.bucket.take(time.monotonic())
        if wait > 0:
            self.violations += 1
            if self.violations > self.settings.gateway_abuse_limit:
                raise _Close(CLOSE_RATE_LIMITED, "too many sends over the rate limit")
            await self.error(
                "M_LIMIT_EXCEEDED", "too many sends", txn_id=txn_id, retry_after_ms=int(wait * 1000) + 1
            )
            return
        content = data.get("content")
        event_type = data.get("type", "m.room.message")
        try:
            if (
                not isinstance(txn_id, str)
                or not isinstance(data.get("room_id"), str)
                or not isinstance(content, dict)
            ):
                raise ClawlistError(
                    400, "M_BAD_JSON", "send needs string txn_id and room_id and an object content"
                )
            if not isinstance(event_type, str):
                raise ClawlistError(400, "M_BAD_JSON", "type must be a string")
            event_id = await messages.send_event(
                self.svc, self.actor, data["room_id"], event_type, content, txn_id
            )
        except ClawlistError as exc:
            await self.error(exc.errcode, exc.message, txn_id=txn_id)
            return
        await self.send("ack", {"txn_id": txn_id, "event_id": event_id})


class TransportProbe:
    """Outermost ASGI middleware: remembers the server's own `send` for WebSocket connections, so the
    gateway can read how many bytes are still unsent to a client (the server buffers them without
    bound otherwise: a client that stops reading would grow our memory)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND_KEY] = send
        await self.app(scope, receive, send)


def direct_sink(ws: WebSocket, max_unsent_bytes: int) -> FrameSink | None:
    """A writer of text frames straight into the client's socket buffer, when the server is
    uvicorn's websockets-sansio implementation (the one `clawlist serve` runs); else None.

    Going through ASGI costs a task wake-up and several layers of `send` per frame; for a room
    with a thousand live subscribers that is most of the server's work. Server-to-client frames
    are unmasked and uncompressed (per-message deflate is off), so a frame is a 2-10 byte header
    and the payload; control frames (close, pong) still go through the protocol object.
    """
    protocol: Any = getattr(ws.scope.get(RAW_SEND_KEY), "__self__", None)
    transport: Any = getattr(protocol, "transport", None)
    connection: Any = getattr(protocol, "conn", None)
    if transport is None or not hasattr(protocol, "close_sent") or not hasattr(connection, "state"):
        return None

    def write(payload: bytes) -> None:
        if protocol.close_sent or connection.state is not State.OPEN or transport.is_closing():
            return  # the connection is ending; the client resumes from its position
        if transport.get_write_buffer_size() > max_unsent_bytes:
            raise SlowConsumer
        size = len(payload)
        if size < 126:
            header = bytes((0x81, size))
        elif size < 65536:
            header = b"\x81\x7e" + size.to_bytes(2, "big")
        else:
            header = b"\x81\x7f" + size.to_bytes(8, "big")
        transport.write(header + payload)

    return write


def unsent_bytes(ws: WebSocket) -> int | None:
    """Bytes written to this client's socket buffer in our process but not yet sent, if known."""
    transport = getattr(getattr(ws.scope.get(RAW_SEND_KEY), "__self__", None), "transport", None)
    if transport is None:
        return None
    try:
        return int(transport.get_write_buffer_size())
    except (AttributeError, TypeError, ValueError):
        return None


def _bearer(ws: WebSocket) -> str | None:
    header = ws.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return ws.query_params.get("access_token")
