"""Loading what the pure rules in `core` need to decide, inside a transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.core import events as ev
from clawlist.core import power
from clawlist.core.errors import ClawlistError, forbidden, not_found
from clawlist.storage.event_store import membership_of, room_row, state_content


async def require_room(conn: AsyncConnection, room_id: str) -> Row[Any]:
    row = await room_row(conn, room_id)
    if row is None:
        raise not_found(f"no room {room_id}")
    return row


async def power_levels(conn: AsyncConnection, room_id: str) -> dict[str, Any]:
    return await state_content(conn, room_id, ev.POWER_LEVELS) or {}


async def join_rule(conn: AsyncConnection, room_id: str) -> str:
    content = await state_content(conn, room_id, ev.JOIN_RULES) or {}
    return str(content.get("join_rule", "invite"))


async def history_visibility(conn: AsyncConnection, room_id: str) -> str:
    content = await state_content(conn, room_id, ev.HISTORY_VISIBILITY) or {}
    return str(content.get("history_visibility", "shared"))


async def require_joined(conn: AsyncConnection, room_id: str, user_id: str) -> None:
    membership = await membership_of(conn, room_id, user_id)
    if membership != "join":
        if await room_row(conn, room_id) is None:
            raise not_found(f"no room {room_id}")
        raise forbidden(f"{user_id} is not in room {room_id}")


async def require_can_send(
    conn: AsyncConnection, room_id: str, user_id: str, event_type: str, *, is_state: bool
) -> dict[str, Any]:
    await require_joined(conn, room_id, user_id)
    levels = await power_levels(conn, room_id)
    if not power.can_send(levels, user_id, event_type, is_state):
        needed = power.event_level(levels, event_type, is_state)
        raise ClawlistError(
            403,
            "M_FORBIDDEN",
            f"sending {event_type} needs power level {needed}; you have {power.user_level(levels, user_id)}",
        )
    return levels
