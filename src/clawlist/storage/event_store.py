"""Reading events and room state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Row, and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.core import redaction
from clawlist.storage.tables import current_state, events, memberships, rooms

# Hot-path queries, built once: executing a prebuilt statement skips rebuilding the expression.
_EVENT_BY_ID = select(events).where(events.c.event_id == bindparam("event_id"))
_STATE_CONTENT = (
    select(events.c.content, events.c.type, events.c.redacted_by)
    .select_from(current_state.join(events, events.c.event_id == current_state.c.event_id))
    .where(
        and_(
            current_state.c.room_id == bindparam("room_id"),
            current_state.c.type == bindparam("type"),
            current_state.c.state_key == bindparam("state_key"),
        )
    )
)
_MEMBERSHIP = select(memberships.c.membership).where(
    and_(memberships.c.room_id == bindparam("room_id"), memberships.c.user_id == bindparam("user_id"))
)
_ROOM_BY_ID = select(rooms).where(rooms.c.room_id == bindparam("room_id"))


@dataclass(slots=True)
class StoredEvent:
    position: int
    event_id: str
    room_id: str
    type: str
    sender: str
    origin_server_ts: int
    content: dict[str, Any]
    state_key: str | None = None
    depth: int = 0
    redacted_by: str | None = None
    relates_to: str | None = None
    rel_type: str | None = None
    session_id: str | None = None
    txn_id: str | None = None
    unsigned: dict[str, Any] = field(default_factory=dict)

    def to_client(self, *, for_session: str | None = None) -> dict[str, Any]:
        """Matrix client-format event. `unsigned.transaction_id` only goes to the sending session."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "type": self.type,
            "sender": self.sender,
            "room_id": self.room_id,
            "origin_server_ts": self.origin_server_ts,
            "content": self.content,
        }
        if self.state_key is not None:
            out["state_key"] = self.state_key
        if self.type == "m.room.redaction" and "redacts" in self.content:
            out["redacts"] = self.content["redacts"]
        unsigned = dict(self.unsigned)
        if self.redacted_by:
            unsigned["redacted_because"] = {"event_id": self.redacted_by}
        if for_session is not None and for_session == self.session_id and self.txn_id is not None:
            unsigned["transaction_id"] = self.txn_id
        if unsigned:
            out["unsigned"] = unsigned
        out["position"] = self.position
        return out


def event_from_row(row: Row[Any]) -> StoredEvent:
    m = row._mapping
    content = orjson.loads(m["content"])
    if m["redacted_by"]:
        content = redaction.redact_content(m["type"], content)
    return StoredEvent(
        position=m["position"],
        event_id=m["event_id"],
        room_id=m["room_id"],
        type=m["type"],
        sender=m["sender"],
        origin_server_ts=m["origin_server_ts"],
        content=content,
        state_key=m["state_key"],
        depth=m["depth"],
        redacted_by=m["redacted_by"],
        relates_to=m["relates_to"],
        rel_type=m["rel_type"],
        session_id=m["session_id"],
        txn_id=m["txn_id"],
    )


async def get_event(conn: AsyncConnection, event_id: str) -> StoredEvent | None:
    if not isinstance(event_id, str) or "\x00" in event_id:
        return None  # no event id holds NUL, and PostgreSQL cannot even compare one
    row = (await conn.execute(_EVENT_BY_ID, {"event_id": event_id})).first()
    return event_from_row(row) if row else None


async def state_content(
    conn: AsyncConnection, room_id: str, event_type: str, state_key: str = ""
) -> dict[str, Any] | None:
    row = (
        await conn.execute(_STATE_CONTENT, {"room_id": room_id, "type": event_type, "state_key": state_key})
    ).first()
    if row is None:
        return None
    content: dict[str, Any] = orjson.loads(row.content)
    if row.redacted_by:
        content = redaction.redact_content(row.type, content)
    return content


async def room_state_events(conn: AsyncConnection, room_id: str) -> list[StoredEvent]:
    rows = (
        await conn.execute(
            select(events)
            .select_from(current_state.join(events, events.c.event_id == current_state.c.event_id))
            .where(current_state.c.room_id == room_id)
            .order_by(events.c.position)
        )
    ).all()
    return [event_from_row(r) for r in rows]


async def membership_of(conn: AsyncConnection, room_id: str, user_id: str) -> str | None:
    row = (await conn.execute(_MEMBERSHIP, {"room_id": room_id, "user_id": user_id})).first()
    return str(row.membership) if row else None


async def room_row(conn: AsyncConnection, room_id: str) -> Row[Any] | None:
    return (await conn.execute(_ROOM_BY_ID, {"room_id": room_id})).first()


async def state_contents(
    conn: AsyncConnection, room_ids: Any, types: tuple[str, ...]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Current state contents of `types` (empty state key) for `room_ids` (a list or a subquery):
    room id -> type -> content. Used by room summaries and the public room directory."""
    rows = (
        await conn.execute(
            select(current_state.c.room_id, current_state.c.type, events.c.content)
            .select_from(current_state.join(events, events.c.event_id == current_state.c.event_id))
            .where(
                and_(
                    current_state.c.room_id.in_(room_ids),
                    current_state.c.type.in_(types),
                    current_state.c.state_key == "",
                )
            )
        )
    ).all()
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        content = orjson.loads(row.content)
        if isinstance(content, dict):
            found.setdefault(row.room_id, {})[row.type] = content
    return found
