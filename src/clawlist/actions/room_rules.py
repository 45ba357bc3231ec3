"""Loading what the pure rules in `core` need to decide, inside a transaction.

Each function takes either a plain connection or, inside the room writer, the `WriteTx`, whose
membership and state reads are served from a cache validated against the room's state version.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.core import events as ev
from clawlist.core import power
from clawlist.core.errors import ClawlistError, forbidden, not_found
from clawlist.storage import event_store
from clawlist.storage.event_writer import WriteTx

Reader = AsyncConnection | WriteTx


def _conn(reader: Reader) -> AsyncConnection:
    return reader.conn if isinstance(reader, WriteTx) else reader


async def membership_of(reader: Reader, room_id: str, user_id: str) -> str | None:
    if isinstance(reader, WriteTx):
        return await reader.membership_of(room_id, user_id)
    return await event_store.membership_of(reader, room_id, user_id)


async def state_content(
    reader: Reader, room_id: str, event_type: str, state_key: str = ""
) -> dict[str, Any] | None:
    if isinstance(reader, WriteTx):
        return await reader.state_content(room_id, event_type, state_key)
    return await event_store.state_content(reader, room_id, event_type, state_key)


async def require_room(reader: Reader, room_id: str) -> Row[Any]:
    row = await event_store.room_row(_conn(reader), room_id)
    if row is None:
        raise not_found(f"no room {room_id}")
    return row


async def power_levels(reader: Reader, room_id: str) -> dict[str, Any]:
    return await state_content(reader, room_id, ev.POWER_LEVELS) or {}


async def join_rule(reader: Reader, room_id: str) -> str:
    content = await state_content(reader, room_id, ev.JOIN_RULES) or {}
    return str(content.get("join_rule", "invite"))


async def history_visibility(reader: Reader, room_id: str) -> str:
    content = await state_content(reader, room_id, ev.HISTORY_VISIBILITY) or {}
    return str(content.get("history_visibility", "shared"))


async def require_joined(reader: Reader, room_id: str, user_id: str) -> None:
    membership = await membership_of(reader, room_id, user_id)
    if membership != "join":
        if await event_store.room_row(_conn(reader), room_id) is None:
            raise not_found(f"no room {room_id}")
        raise forbidden(f"{user_id} is not in room {room_id}")


async def require_can_send(
    reader: Reader, room_id: str, user_id: str, event_type: str, *, is_state: bool
) -> dict[str, Any]:
    await require_joined(reader, room_id, user_id)
    levels = await power_levels(reader, room_id)
    if not power.can_send(levels, user_id, event_type, is_state):
        needed = power.event_level(levels, event_type, is_state)
        raise ClawlistError(
            403,
            "M_FORBIDDEN",
            f"sending {event_type} needs power level {needed}; you have {power.user_level(levels, user_id)}",
        )
    return levels
