"""Long-poll sync: everything new for one agent since a token, returned as soon as there is any.

A token is `s<position>_<ephemeral version>_<instance>`: the stream position is global, so a token
works on any process; the ephemeral part is this process's, and on another process the current
typing and receipt state of the agent's rooms is simply sent again. The Matrix sync
(`actions/matrix_sync.py`) appends `_<account data version>`; `parse_token` reads both forms.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select

from clawlist.actions.actor import Actor
from clawlist.actions.ephemeral import Change
from clawlist.actions.feed import FeedEvent
from clawlist.actions.live import shares_room
from clawlist.actions.services import Services
from clawlist.actions.signals import mark_active, receipts_content
from clawlist.actions.viewer import Viewer, replay
from clawlist.core.errors import ClawlistError, bad_request
from clawlist.storage.event_store import event_from_row
from clawlist.storage.tables import events, stream_counter

TOKEN_RE = re.compile(r"^s(\d{1,19})_(\d{1,19})_([0-9a-f]{1,32})(?:_(\d{1,19}))?$")
INITIAL_TIMELINE = 20


@dataclass(frozen=True)
class SyncToken:
    position: int
    ephemeral: int
    instance: str
    account_data: int | None = None  # Matrix tokens only: the account-data version covered

    def render(self) -> str:
        base = f"s{self.position}_{self.ephemeral}_{self.instance}"
        return base if self.account_data is None else f"{base}_{self.account_data}"


def parse_token(token: str) -> SyncToken:
    match = TOKEN_RE.match(token) if isinstance(token, str) else None
    if match is None:
        raise bad_request(f"invalid sync token {token!r}", "M_INVALID_PARAM")
    extra = match.group(4)
    return SyncToken(
        int(match.group(1)), int(match.group(2)), match.group(3), None if extra is None else int(extra)
    )


async def sync(
    svc: Services, actor: Actor, *, since: str | None, timeout_ms: int, timeline_limit: int | None = None
) -> dict[str, Any]:
    if not isinstance(timeout_ms, int) or timeout_ms < 0:
        raise bad_request("timeout must be a non-negative number of milliseconds")
    timeout_s = min(timeout_ms, svc.settings.sync_max_timeout_ms) / 1000
    hub = svc.ephemeral
    if actor.is_agent:
        await mark_active(svc, actor.principal_id)
    if since is None:
        return await _initial(svc, actor, timeline_limit or INITIAL_TIMELINE)
    token = parse_token(since)
    if token.position > svc.feed.head and token.position > await db_head(svc):
        raise ClawlistError(400, "M_INVALID_PARAM", "this sync token is from the future")
    viewer = await Viewer.load(svc, actor)
    # On another process the ephemeral version means nothing: send the current state once.
    eph: int | None = token.ephemeral if token.instance == hub.instance else None
    deadline = time.monotonic() + timeout_s
    position = token.position
    while True:
        version = hub.version  # read before looking, so nothing slips between look and token
        head = svc.feed.head
        found, reached = await _events_since(svc, viewer, position, head)
        changes = None if eph is None else _ephemeral_since(svc, viewer, eph)
        if changes is None:
            ephemeral_rooms, presence = set(viewer.joined), []
        else:
            ephemeral_rooms = {c.room_id for c in changes if c.room_id}
            presence = [c for c in changes if c.kind == "presence"]
        if found or ephemeral_rooms or presence or time.monotonic() >= deadline:
            break
        position = reached
        await wait_any(svc, position, version, max(0.0, deadline - time.monotonic()))
    next_token = SyncToken(reached, version, hub.instance)
    return await _render(svc, viewer, found, ephemeral_rooms, presence, next_token)


async def db_head(svc: Services) -> int:
    async with svc.db.read() as conn:
        return int((await conn.execute(select(stream_counter.c.position))).scalar() or 0)


async def _events_since(
    svc: Services, viewer: Viewer, position: int, head: int
) -> tuple[list[FeedEvent], int]:
    limit = svc.settings.sync_max_events
    buffered = svc.feed.after(position)
    if buffered is None:
        return await replay(svc, viewer, position, head, limit)
    found: list[FeedEvent] = []
    for item in buffered:
        if item.position > head:
            break
        if viewer.accept(item.event):
            found.append(item)
            if len(found) >= limit:
                return found, item.position
    return found, max(head, position)


def _ephemeral_since(svc: Services, viewer: Viewer, version: int) -> list[Change] | None:
    """Relevant changes after `version`; None when they are no longer all remembered."""
    changes = svc.ephemeral.since(version)
    if changes is None:
        return None
    return [
        c
        for c in changes
        if (c.kind == "presence" and shares_room(c, viewer))
        or (c.kind in ("typing", "receipt") and c.room_id in viewer.joined)
    ]


async def wait_any(svc: Services, position: int, version: int, timeout: float) -> None:
    waits = [
        asyncio.ensure_future(svc.feed.wait_beyond(position, timeout)),
        asyncio.ensure_future(svc.ephemeral.wait_beyond(version, timeout)),
    ]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _render(
    svc: Services,
    viewer: Viewer,
    found: list[FeedEvent],
    ephemeral_rooms: set[str],
    presence: list[Change],
    token: SyncToken,
) -> dict[str, Any]:
    rooms: dict[str, dict[str, Any]] = {}
    for item in found:
        rooms.setdefault(item.event.room_id, {"timeline": [], "ephemeral": []})["timeline"].append(
            item.event.to_client()
        )
    eph_rooms = sorted(ephemeral_rooms & viewer.joined)
    receipts = await receipts_content(svc, eph_rooms)
    for room_id in eph_rooms:
        entry = rooms.setdefault(room_id, {"timeline": [], "ephemeral": []})
        entry["ephemeral"].append(
            {"type": "m.typing", "content": {"user_ids": svc.ephemeral.typing_in(room_id)}}
        )
        if room_id in receipts:
            entry["ephemeral"].append({"type": "m.receipt", "content": receipts[room_id]})
    latest: dict[str, Change] = {c.user_id: c for c in presence}
    return {
        "next_batch": token.render(),
        "rooms": rooms,
        "invites": sorted(viewer.invited),
        "presence": [
            {"type": "m.presence", "sender": user, "content": svc.ephemeral.presence_of(user)}
            for user in sorted(latest)
        ],
    }


async def _initial(svc: Services, actor: Actor, limit: int) -> dict[str, Any]:
    if not 1 <= limit <= svc.settings.max_page_size:
        raise bad_request(f"timeline limit must be 1-{svc.settings.max_page_size}")
    head = max(svc.feed.head, await db_head(svc))
    viewer = await Viewer.load(svc, actor)
    found: list[FeedEvent] = []
    async with svc.db.read() as conn:
        for room_id in sorted(viewer.joined):
            rows = (
                await conn.execute(
                    select(events)
                    .where(and_(events.c.room_id == room_id, events.c.position <= head))
                    .order_by(events.c.position.desc())
                    .limit(limit)
                )
            ).all()
            found.extend(FeedEvent(event_from_row(r)) for r in reversed(rows))
    found.sort(key=lambda f: f.position)
    token = SyncToken(head, svc.ephemeral.version, svc.ephemeral.instance)
    presence = [c for c in svc.ephemeral.changes if c.kind == "presence"]
    return await _render(svc, viewer, found, set(viewer.joined), presence, token)
