"""The event feed: this process's tail of the event stream.

One reader per process follows the stream of positions: it wakes on the bus (a commit here or in
another process) or on a poll timer, reads the new events from the database once, keeps the most
recent ones in a ring buffer, and hands them to every live session (WebSocket connections) and
long-poll waiter. So 1,000 subscribers of a room cost one database read per batch, not 1,000.
Because positions become visible strictly in order, reading "everything after my head" never skips
an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import bindparam, select

from clawlist.bus.base import WAKEUP, Bus
from clawlist.storage.database import Database
from clawlist.storage.event_store import StoredEvent, event_from_row
from clawlist.storage.tables import events, stream_counter

log = logging.getLogger(__name__)

_AFTER = (
    select(events)
    .where(events.c.position > bindparam("after"))
    .order_by(events.c.position)
    .limit(bindparam("n"))
)
_HEAD = select(stream_counter.c.position).where(stream_counter.c.id == 1)
READ_CHUNK = 1000


class FeedEvent:
    """A stored event with its client JSON rendered once, for every session that sends it."""

    __slots__ = ("event", "json")

    def __init__(self, event: StoredEvent) -> None:
        self.event = event
        self.json = orjson.dumps(event.to_client())

    @property
    def position(self) -> int:
        return self.event.position

    def matrix_json(self) -> bytes:
        """The Matrix client JSON: the native JSON without its trailing `position` (which
        `StoredEvent.to_client` writes last), sliced rather than rendered again."""
        cut = self.json.rfind(b',"position":')
        return self.json[:cut] + b"}" if cut > 0 else self.json


Listener = Callable[[list[FeedEvent]], None]


class EventFeed:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        *,
        buffer_size: int = 10_000,
        buffer_bytes: int = 64 * 1024 * 1024,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.db = db
        self.bus = bus
        self.poll_interval_s = poll_interval_s
        self.head = 0
        self._ring: deque[FeedEvent] = deque()
        self._ring_bytes = 0
        self.buffer_size = buffer_size
        self.buffer_bytes = buffer_bytes
        self._wake = asyncio.Event()
        self._advanced = asyncio.Condition()
        self._listeners: set[Listener] = set()
        self._task: asyncio.Task[None] | None = None
        bus.subscribe(WAKEUP, self._on_wakeup)

    async def start(self) -> None:
        async with self.db.read() as conn:
            self.head = int((await conn.execute(_HEAD)).scalar() or 0)
        self._task = asyncio.create_task(self._run(), name="clawlist-event-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _on_wakeup(self, payload: bytes) -> None:
        del payload
        self._wake.set()

    def poke(self) -> None:
        """Read now (called after a local commit, in case the bus is slow or down)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
            self._wake.clear()
            try:
                await self._read_new()
            except Exception:
                log.exception("event feed read failed; retrying")
                await asyncio.sleep(self.poll_interval_s)

    async def _read_new(self) -> None:
        while True:
            async with self.db.read() as conn:
                rows = (await conn.execute(_AFTER, {"after": self.head, "n": READ_CHUNK})).all()
            if not rows:
                return
            batch = [FeedEvent(event_from_row(r)) for r in rows]
            self._remember(batch)
            self.head = batch[-1].position
            for listener in list(self._listeners):
                try:
                    listener(batch)
                except Exception:
                    log.exception("feed listener failed")
            async with self._advanced:
                self._advanced.notify_all()
            if len(rows) < READ_CHUNK:
                return

    def _remember(self, batch: list[FeedEvent]) -> None:
        """Keep recent events, at most `buffer_size` of them and `buffer_bytes` of rendered JSON."""
        self._ring.extend(batch)
        self._ring_bytes += sum(len(item.json) for item in batch)
        while self._ring and (len(self._ring) > self.buffer_size or self._ring_bytes > self.buffer_bytes):
            self._ring_bytes -= len(self._ring.popleft().json)

    def listen(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def unlisten(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def after(self, position: int) -> list[FeedEvent] | None:
        """Buffered events after `position`, or None if the buffer no longer reaches back that far."""
        if position >= self.head:
            return []
        if not self._ring or self._ring[0].position > position + 1:
            return None
        start = position + 1 - self._ring[0].position
        return list(itertools.islice(self._ring, max(start, 0), None))

    async def wait_beyond(self, position: int, timeout: float) -> None:
        """Return once the head passes `position`, or after `timeout` seconds."""
        if self.head > position:
            return
        async with self._advanced:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait_for(lambda: self.head > position), timeout)

    def stats(self) -> dict[str, Any]:
        return {"head": self.head, "buffered": len(self._ring), "listeners": len(self._listeners)}
