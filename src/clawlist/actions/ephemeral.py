"""Typing, presence and read-receipt notifications: state that is not part of the timeline.

Typing and presence live in memory and are replicated between processes over the bus (the
`ephemeral` channel); read receipts are also stored in the database. Every change bumps this
process's `version`, wakes long-polls and is handed to live sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from clawlist.bus.base import EPHEMERAL, Bus
from clawlist.core.clock import Clock

log = logging.getLogger(__name__)

PRESENCE_STATES = ("online", "unavailable", "offline")


@dataclass
class Change:
    version: int
    kind: str  # typing | receipt | presence
    room_id: str | None
    user_id: str
    data: dict[str, Any]


EphemeralListener = Callable[[Change], None]


@dataclass
class Presence:
    state: str
    last_active_ms: int
    status_msg: str | None = None
    announced_idle: bool = False


class EphemeralHub:
    def __init__(self, bus: Bus, clock: Clock, *, idle_after_s: float, history: int = 10_000) -> None:
        self.bus = bus
        self.clock = clock
        self.idle_after_ms = int(idle_after_s * 1000)
        self.version = 0
        self.instance = f"{int(time.time() * 1000):x}{id(self) & 0xFFFF:x}"
        self.typing: dict[str, dict[str, int]] = {}  # room -> user -> expiry (ms)
        self.presence: dict[str, Presence] = {}
        self.changes: deque[Change] = deque(maxlen=history)
        self._listeners: set[EphemeralListener] = set()
        self._changed = asyncio.Condition()
        self._sweeper: asyncio.Task[None] | None = None
        bus.subscribe(EPHEMERAL, self._on_message)

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="clawlist-ephemeral-sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def listen(self, listener: EphemeralListener) -> None:
        self._listeners.add(listener)

    def unlisten(self, listener: EphemeralListener) -> None:
        self._listeners.discard(listener)

    async def publish(self, kind: str, room_id: str | None, user_id: str, data: dict[str, Any]) -> None:
        payload = orjson.dumps({"k": kind, "r": room_id, "u": user_id, "d": data})
        await self.bus.publish(EPHEMERAL, payload)

    async def _on_message(self, payload: bytes) -> None:
        try:
            msg = orjson.loads(payload)
            kind, room_id, user_id, data = msg["k"], msg.get("r"), msg["u"], msg.get("d") or {}
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring a malformed ephemeral message")
            return
        self._apply(kind, room_id, user_id, data)

    def _apply(self, kind: str, room_id: str | None, user_id: str, data: dict[str, Any]) -> None:
        now = self.clock.now_ms()
        if kind == "typing" and room_id:
            users = self.typing.setdefault(room_id, {})
            if data.get("typing"):
                users[user_id] = now + int(data.get("timeout_ms", 30_000))
            else:
                users.pop(user_id, None)
            data = {"user_ids": self.typing_in(room_id)}
        elif kind == "presence":
            self.presence[user_id] = Presence(
                str(data.get("state", "online")), int(data.get("last_active_ms", now)), data.get("status_msg")
            )
        self._record(Change(0, kind, room_id, user_id, data))

    def _record(self, change: Change) -> None:
        self.version += 1
        change.version = self.version
        self.changes.append(change)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("ephemeral listener failed")
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_beyond(self, version: int, timeout: float) -> None:
        if self.version > version:
            return
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.version > version), timeout)

    def since(self, version: int) -> list[Change] | None:
        """Changes after `version`, or None when they are no longer all remembered."""
        if version >= self.version:
            return []
        if not self.changes or self.changes[0].version > version + 1:
            return None
        # Versions in the deque are consecutive, so the first wanted one is at a known index.
        start = max(version + 1 - self.changes[0].version, 0)
        return list(itertools.islice(self.changes, start, None))

    def typing_in(self, room_id: str) -> list[str]:
        now = self.clock.now_ms()
        users = self.typing.get(room_id, {})
        return sorted(u for u, expiry in users.items() if expiry > now)

    def presence_of(self, user_id: str) -> dict[str, Any]:
        p = self.presence.get(user_id)
        if p is None:
            return {"presence": "offline"}
        now = self.clock.now_ms()
        state = p.state
        if state == "online" and now - p.last_active_ms > self.idle_after_ms:
            state = "unavailable"  # idle
        out: dict[str, Any] = {"presence": state, "last_active_ago": max(0, now - p.last_active_ms)}
        if p.status_msg is not None:
            out["status_msg"] = p.status_msg
        out["currently_active"] = state == "online"
        return out

    async def _sweep(self) -> None:
        """Expire typing notifications and turn quiet agents idle, announcing each change."""
        while True:
            await asyncio.sleep(1.0)
            now = self.clock.now_ms()
            for room_id, users in list(self.typing.items()):
                expired = [u for u, expiry in users.items() if expiry <= now]
                for user in expired:
                    users.pop(user, None)
                    self._record(Change(0, "typing", room_id, user, {"user_ids": self.typing_in(room_id)}))
            for user_id, p in list(self.presence.items()):
                if (
                    p.state == "online"
                    and now - p.last_active_ms > self.idle_after_ms
                    and not p.announced_idle
                ):
                    p.announced_idle = True
                    self._record(Change(0, "presence", None, user_id, self.presence_of(user_id)))
