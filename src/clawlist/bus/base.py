"""The bus: how processes tell each other that something happened.

It carries wake-ups ("room R has events up to position P"), ephemeral signals (typing, presence)
and shared rate-limit counters. It never carries the truth: events live in the database, and a
lost message can only delay a delivery until the next wake-up or poll, never lose one.

Implementations: `memory` (one process, the default), `redis://`, `nats://` (see `open_bus`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

#: Channel names. A channel carries opaque bytes; publishers and subscribers agree on JSON.
WAKEUP = "wakeup"
EPHEMERAL = "ephemeral"

Handler = Callable[[bytes], Awaitable[None]]


class Bus(Protocol):
    """Publish/subscribe between the processes of one deployment, plus shared counters."""

    #: A short name for logs and /health: "memory", "redis" or "nats".
    kind: str

    async def start(self) -> None:
        """Connect. Must not raise if the service is down: keep retrying in the background."""

    async def stop(self) -> None: ...

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Call `handler(payload)` for every message on `channel`, including this process's own.

        Register handlers before `start()`. A handler that raises is logged and does not stop the bus.
        """

    async def publish(self, channel: str, payload: bytes) -> None:
        """Best effort: never raises because the service is down (logs and drops instead)."""

    async def incr(self, key: str, window_s: float) -> int:
        """Add one to the counter `key` in the current fixed window of `window_s` seconds and return
        its new value, shared by every process. If the service is down, count in this process."""

    @property
    def connected(self) -> bool:
        """Whether messages currently reach other processes (always True for memory)."""
