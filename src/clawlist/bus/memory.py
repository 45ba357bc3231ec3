"""The in-process bus: one process, no external service."""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from clawlist.bus.base import Handler

log = logging.getLogger(__name__)


class LocalCounters:
    """Fixed-window counters in this process (also the fallback of the networked buses)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}

    def incr(self, key: str, window_s: float) -> int:
        window = int(time.monotonic() // window_s)
        if len(self._counts) > 100_000:
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= window - 1}
        value = self._counts.get((key, window), 0) + 1
        self._counts[(key, window)] = value
        return value


class MemoryBus:
    kind = "memory"

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._counters = LocalCounters()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers[channel].append(handler)

    async def publish(self, channel: str, payload: bytes) -> None:
        await dispatch(self._handlers.get(channel, ()), payload)

    async def incr(self, key: str, window_s: float) -> int:
        return self._counters.incr(key, window_s)

    @property
    def connected(self) -> bool:
        return True


async def dispatch(handlers: list[Handler] | tuple[()], payload: bytes) -> None:
    for handler in handlers:
        try:
            await handler(payload)
        except Exception:
            log.exception("bus handler failed")
