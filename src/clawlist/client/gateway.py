"""The live event stream over the WebSocket gateway (`/api/v1/gateway`, protocol in docs/gateway.md).

`Gateway` is an async iterator of events that identifies, resumes from the last position it
received after any disconnect (with exponential backoff), refreshes the token on 4004/4011, dedupes
by `event_id` (the server delivers at least once) and heartbeats at the interval `hello` gives. A
background task reads the socket into a bounded buffer; when the consumer falls behind, reading
stops and the server eventually drops the connection with 4010, from which it resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from clawlist.client.api import ClawlistClient, Event, new_txn_id
from clawlist.client.gateway_link import AUTH_CLOSES, FATAL_CLOSES, GatewayError, Link
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

__all__ = [
    "AUTH_CLOSES",
    "CLOSE_ALREADY_IDENTIFIED",
    "CLOSE_AUTH_FAILED",
    "CLOSE_BAD_POSITION",
    "CLOSE_HEARTBEAT_TIMEOUT",
    "CLOSE_NOT_IDENTIFIED",
    "CLOSE_ORIGIN",
    "CLOSE_RATE_LIMITED",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TOKEN_EXPIRED",
    "CLOSE_UNKNOWN",
    "FATAL_CLOSES",
    "Gateway",
    "GatewayError",
]


class Gateway:
    """`async for event in client.events(rooms=None, since=None): ...` (or `async with` it).

    - `rooms`: room ids or aliases to follow (default: every joined room);
    - `since`: a `position` saved earlier: the stream starts right after it (default: now).
    - `.position`: the position of the last event yielded (or skipped as not wanted): save it and
      pass it as `since` later to miss nothing.
    Breaking out of the loop, dropping the object or `aclose()` closes the connection.
    """

    def __init__(
        self,
        client: ClawlistClient,
        *,
        rooms: list[str] | None = None,
        since: int | None = None,
        buffer: int = 1000,
        dedupe: int = 10_000,
        max_backoff: float = 30.0,
        connect_timeout: float = 10.0,
        on_signal: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._link = Link(client, rooms, since, buffer, dedupe, max_backoff, connect_timeout, on_signal)

    @property
    def position(self) -> int | None:
        return self._link.consumed_position()

    async def connected(self) -> int | None:
        """Wait until the first connection is identified (`ready`) or resumed; returns `.position`."""
        self._link.start()
        await self._link.wait_established()
        return self.position

    @property
    def reconnects(self) -> int:
        """How many times the connection was re-established."""
        return self._link.reconnects

    @property
    def last_close(self) -> tuple[int | None, str]:
        """(close code, reason) of the last lost connection; code None for a network error."""
        return self._link.last_close

    def __aiter__(self) -> Gateway:
        return self

    async def __anext__(self) -> Event:
        return await self._link.next()

    async def __aenter__(self) -> Gateway:
        """Connect and wait until identified (or resumed): nothing sent after this returns is missed."""
        await self.connected()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._link.close()

    async def send(
        self,
        room_id: str,
        content: dict[str, Any],
        *,
        event_type: str = "m.room.message",
        txn_id: str | None = None,
        timeout: float = 30.0,
        attempts: int = 8,
    ) -> str:
        """Send over the gateway; returns the event id from the `ack`. Retried with the same txn id
        after a disconnect or a rate-limit error. Acks are read by the same task as events, so with
        a full buffer (nobody iterating) this waits: `client.send` (REST) has no such coupling."""
        return await self._link.send(room_id, content, event_type, txn_id or new_txn_id(), timeout, attempts)

    def __del__(self) -> None:
        self._link.cancel()
