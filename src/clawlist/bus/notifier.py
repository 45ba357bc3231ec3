"""The notifier: wakes readers when a room gets new events. Carries wake-ups only; the database is
the truth, so a lost wake-up can delay a delivery but never lose one.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol


class Bus(Protocol):
    async def publish_wakeup(self, room_ids: set[str], position: int) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def latest_position(self) -> int: ...

    async def wait_for_change(self, after: int, timeout: float) -> int: ...


class MemoryBus:
    """In-process bus: one process, no external service."""

    def __init__(self) -> None:
        self._position = 0
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def latest_position(self) -> int:
        return self._position

    async def publish_wakeup(self, room_ids: set[str], position: int) -> None:
        del room_ids
        async with self._changed:
            if position > self._position:
                self._position = position
            self._changed.notify_all()

    async def wait_for_change(self, after: int, timeout: float) -> int:
        """Wait until a position beyond `after` is published, or `timeout` seconds pass."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self._position > after), timeout)
            return self._position
