"""The gateway connection engine behind `clawlist.client.gateway.Gateway`: one background task that
connects, identifies or resumes, heartbeats, reads frames into a bounded buffer (deduplicated by
`event_id`), routes acks, and reconnects with backoff after any disconnect. Protocol: docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from clawlist.client.api import ApiError, ClawlistClient, Event, backoff_delay
from clawlist.core.gateway_protocol import (
    CLOSE_AUTH_FAILED,
    CLOSE_BAD_POSITION,
    CLOSE_ORIGIN,
    CLOSE_TOKEN_EXPIRED,
)

log = logging.getLogger("clawlist.client.gateway")


#: Closes that reconnecting cannot fix: the iterator raises GatewayError.
FATAL_CLOSES = frozenset({CLOSE_ORIGIN, CLOSE_BAD_POSITION})
#: Closes fixed by a fresh access token (refresh, else a new key login), then an immediate reconnect.
AUTH_CLOSES = frozenset({CLOSE_AUTH_FAILED, CLOSE_TOKEN_EXPIRED})
MAX_AUTH_RETRIES = 3


class GatewayError(Exception):
    """The stream cannot go on (fatal close code, refused handshake), or a gateway send failed."""

    def __init__(self, message: str, *, code: int | None = None, errcode: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.errcode = errcode


class Retry(Exception):
    """A gateway send to try again (connection lost before the ack, or rate limited)."""

    def __init__(self, delay: float | None = None) -> None:
        super().__init__("retry")
        self.delay = delay


class Link:
    def __init__(
        self,
        client: ClawlistClient,
        rooms: list[str] | None,
        since: int | None,
        buffer: int,
        dedupe: int,
        max_backoff: float,
        connect_timeout: float,
        on_signal: Callable[[str, dict[str, Any]], None] | None,
    ) -> None:
        self.client = client
        self.rooms = rooms
        self.room_ids: set[str] | None = None
        self.position = since  # what the consumer has seen
        self.resume_at = since  # what was received (buffered or consumed)
        self.buffer = max(2, buffer)
        self.dedupe = max(1, dedupe)
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.on_signal = on_signal
        self.items: deque[tuple[int, Event | None]] = deque()  # (position, event or None: a marker)
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.wake = asyncio.Event()
        self.space = asyncio.Event()
        self.live = asyncio.Event()
        self.pending: dict[str, asyncio.Future[str]] = {}
        self.ws: ClientConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self.closed = False
        self.subscribing = False
        self.established = False  # this connection got ready/resumed
        self.ever_established = False
        self.interval = 30.0
        self.reconnects = 0
        self.connections = 0
        self.last_close: tuple[int | None, str] = (None, "")

    # -- consumer side
    def start(self) -> None:
        if self.task is None and not self.closed:
            self.task = asyncio.get_running_loop().create_task(self._run(), name="clawlist-gateway")

    def consumed_position(self) -> int | None:
        while self.items and self.items[0][1] is None:  # markers ahead of any event are free to apply
            self._consume(self.items.popleft()[0])
        return self.position

    def _consume(self, position: int) -> None:
        self.position = position if self.position is None else max(self.position, position)
        if len(self.items) <= self.buffer // 2:
            self.space.set()

    async def next(self) -> Event:
        self.start()
        while True:
            while self.items:
                position, event = self.items.popleft()
                self._consume(position)
                if event is not None:
                    return event
            if self.failure is not None:
                raise self.failure
            if self.closed or (self.task is not None and self.task.done()):
                raise StopAsyncIteration
            self.wake.clear()
            await self.wake.wait()

    async def wait_established(self) -> None:
        while not self.ever_established:
            if self.failure is not None:
                raise self.failure
            if self.closed or (self.task is not None and self.task.done()):
                raise GatewayError("the gateway is closed")
            self.wake.clear()
            await self.wake.wait()

    async def close(self) -> None:
        self.closed = True
        task, self.task = self.task, None
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=1)
        self.wake.set()

    def cancel(self) -> None:
        self.closed = True
        if self.task is not None and not self.task.done():
            with contextlib.suppress(RuntimeError):  # the loop may be gone already
                self.task.cancel()

    async def send(
        self,
        room_id: str,
        content: dict[str, Any],
        event_type: str,
        txn_id: str,
        timeout: float,
        attempts: int,
    ) -> str:
        self.start()
        data = {"txn_id": txn_id, "room_id": room_id, "content": content, "type": event_type}
        raw = orjson.dumps({"op": "send", "d": data}).decode()
        async with asyncio.timeout(timeout):
            for attempt in range(max(1, attempts)):
                while not self.live.is_set():
                    if self.failure is not None or self.closed:
                        raise GatewayError("the gateway is closed") from self.failure
                    await asyncio.wait([asyncio.ensure_future(self.live.wait())], timeout=0.5)
                future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
                self.pending[txn_id] = future
                try:
                    assert self.ws is not None
                    await self.ws.send(raw)
                    return await future
                except (Retry, ConnectionClosed) as exc:
                    delay = exc.delay if isinstance(exc, Retry) else None
                    await asyncio.sleep(delay if delay is not None else backoff_delay(attempt))
                finally:
                    if self.pending.get(txn_id) is future:
                        del self.pending[txn_id]
        raise GatewayError(f"send {txn_id} not acknowledged after {attempts} attempts")

    # -- the connection loop
    async def _run(self) -> None:
        attempt = auth_failures = 0
        try:
            if self.rooms is not None:
                self.room_ids = {await self._room_id(room) for room in self.rooms}
            while not self.closed:
                token = self.client.access_token
                code, reason = await self._connection()
                if self.closed:
                    return
                self.last_close = (code, reason)
                if self.established:
                    attempt = auth_failures = 0
                log.info("gateway connection lost (%s %s); reconnecting", code, reason)
                if code in FATAL_CLOSES:
                    raise GatewayError(f"gateway closed the stream: {code} {reason}", code=code)
                if (
                    code in AUTH_CLOSES
                    and self.client.can_reauthenticate
                    and auth_failures < MAX_AUTH_RETRIES
                ):
                    auth_failures += 1
                    try:
                        await self.client.reauthenticate(token)
                        continue
                    except (ApiError, httpx.TransportError) as exc:
                        if isinstance(exc, ApiError) and not exc.retryable:
                            raise GatewayError(f"cannot refresh the token: {exc}", code=code) from exc
                elif code in AUTH_CLOSES:
                    raise GatewayError(f"gateway refused the token: {code} {reason}", code=code)
                await asyncio.sleep(backoff_delay(attempt, base=0.25, cap=self.max_backoff))
                attempt += 1
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failure = exc
        finally:
            self.live.clear()
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(GatewayError("the gateway is closed"))
            self.wake.set()

    async def _room_id(self, room: str) -> str:
        return await self.client.retrying(lambda: self.client.room_id(room))

    async def _connection(self) -> tuple[int | None, str]:
        """One connection, until it is lost: returns (close code or None, reason)."""
        self.established = False
        headers = {"Authorization": f"Bearer {self.client.access_token}"} if self.client.access_token else {}
        try:
            async with connect(
                self.client.gateway_url,
                additional_headers=headers,
                open_timeout=self.connect_timeout,
                close_timeout=2,
                ping_interval=None,  # the gateway has its own heartbeats
                max_size=8 * 1024 * 1024,
            ) as ws:
                self.ws = ws
                heart: asyncio.Task[None] | None = None
                try:
                    hello = await self._frame(ws, self.connect_timeout)
                    if hello.get("op") != "hello":
                        return None, f"expected hello, got {hello.get('op')!r}"
                    self.interval = max(0.05, hello.get("d", {}).get("heartbeat_interval_ms", 30_000) / 1000)
                    await self._identify(ws)
                    heart = asyncio.create_task(self._heartbeat(ws))
                    while True:
                        await self._handle(await self._frame(ws, self.interval * 2 + 5))
                except asyncio.CancelledError:  # closed by the consumer: say goodbye with 1000
                    with contextlib.suppress(Exception):
                        await ws.close()
                    raise
                finally:
                    self.live.clear()
                    self.ws = None
                    for future in self.pending.values():
                        if not future.done():
                            future.set_exception(Retry())
                    if heart is not None:
                        heart.cancel()
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                return exc.rcvd.code, exc.rcvd.reason
            return 1006, "connection lost"
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403, 404):
                raise GatewayError(f"gateway handshake refused: HTTP {status}") from exc
            return None, f"HTTP {status}"
        except (OSError, TimeoutError, InvalidHandshake, orjson.JSONDecodeError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    async def _frame(self, ws: ClientConnection, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):  # silence this long: a dead connection
            raw = await ws.recv()  # (not wait_for: on 3.11 it can swallow a cancellation)
        frame = orjson.loads(raw)
        if not isinstance(frame, dict):
            raise orjson.JSONDecodeError("a frame is an object", str(raw)[:50], 0)
        return frame

    async def _identify(self, ws: ClientConnection) -> None:
        if self.resume_at is None:
            await ws.send('{"op":"identify","d":{}}')
        else:
            await ws.send(orjson.dumps({"op": "resume", "d": {"position": self.resume_at}}).decode())
        if self.room_ids:
            self.subscribing = True
            await ws.send(orjson.dumps({"op": "subscribe", "d": {"rooms": sorted(self.room_ids)}}).decode())
        self.connections += 1
        if self.connections > 1:
            self.reconnects += 1
        self.live.set()

    async def _heartbeat(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.interval)
                await ws.send('{"op":"heartbeat","d":{}}')

    async def _handle(self, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d") or {}
        if op == "event":
            await self._on_event(data)
        elif op in ("ready", "resumed"):
            self.established = self.ever_established = True
            await self._mark(int(data["position"]))
        elif op == "heartbeat_ack" and isinstance(data.get("position"), int):
            await self._mark(data["position"])
        elif op == "ack":
            future = self.pending.get(str(data.get("txn_id")))
            if future is not None and not future.done():
                future.set_result(str(data["event_id"]))
        elif op == "error":
            self._on_error(data)
        elif op == "subscriptions":
            self.subscribing = False
        elif op in ("typing", "receipt", "presence") and self.on_signal is not None:
            self.on_signal(op, data)

    def _on_error(self, data: dict[str, Any]) -> None:
        errcode, message = str(data.get("errcode")), str(data.get("error"))
        future = self.pending.get(str(data.get("txn_id")))
        if future is not None and not future.done():
            if errcode == "M_LIMIT_EXCEEDED":
                future.set_exception(Retry(data.get("retry_after_ms", 1000) / 1000))
            else:
                future.set_exception(GatewayError(message, errcode=errcode))
        elif self.subscribing and data.get("txn_id") is None:
            raise GatewayError(f"cannot subscribe: {errcode}: {message}", errcode=errcode)
        else:
            log.warning("gateway error frame: %s %s", errcode, message)

    async def _on_event(self, event: Event) -> None:
        position = int(event["position"])
        self.resume_at = position if self.resume_at is None else max(self.resume_at, position)
        event_id = str(event.get("event_id"))
        wanted = self.room_ids is None or event.get("room_id") in self.room_ids
        if event_id in self.seen:
            self.seen.move_to_end(event_id)
            wanted = False
        elif wanted:
            self.seen[event_id] = None
            if len(self.seen) > self.dedupe:
                self.seen.popitem(last=False)
        await self._put(position, event if wanted else None)

    async def _mark(self, position: int) -> None:
        self.resume_at = position if self.resume_at is None else max(self.resume_at, position)
        await self._put(position, None)

    async def _put(self, position: int, event: Event | None) -> None:
        if event is None and self.items and self.items[-1][1] is None:
            self.items[-1] = (max(position, self.items[-1][0]), None)  # markers merge
        else:
            while len(self.items) >= self.buffer:  # the consumer is behind: stop reading
                self.space.clear()
                await self.space.wait()
            self.items.append((position, event))
        self.wake.set()
