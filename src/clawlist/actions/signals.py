"""Typing notifications, presence and read receipts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from clawlist.actions import account_data
from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.ephemeral import PRESENCE_STATES
from clawlist.actions.room_rules import require_joined
from clawlist.actions.rooms import resolve_room
from clawlist.actions.services import Services
from clawlist.core.errors import bad_request, not_found
from clawlist.storage.event_store import get_event
from clawlist.storage.tables import memberships, receipts

RECEIPT_TYPES = ("m.read", "m.read.private", "m.fully_read")
#: Re-announce an agent that stays active at most this often (bus traffic stays bounded).
PRESENCE_REFRESH_MS = 60_000
#: Rooms carried with a presence change (who may see it); an agent in more shares it with these.
MAX_PRESENCE_ROOMS = 1000


async def set_typing(
    svc: Services, actor: Actor, room_ref: str, typing: bool, timeout_ms: int | None
) -> None:
    user_id = require_agent(actor)
    room_id = await resolve_room(svc, room_ref)
    if not isinstance(typing, bool):
        raise bad_request("typing must be true or false")
    timeout = 30_000 if timeout_ms is None else timeout_ms
    if not isinstance(timeout, int) or not 0 < timeout <= svc.settings.typing_max_timeout_ms:
        raise bad_request(f"timeout must be 1-{svc.settings.typing_max_timeout_ms} ms")
    async with svc.db.read() as conn:
        await require_joined(conn, room_id, user_id)
    await svc.ephemeral.publish("typing", room_id, user_id, {"typing": typing, "timeout_ms": timeout})
    await mark_active(svc, user_id)


async def set_presence(svc: Services, actor: Actor, state: str, status_msg: str | None = None) -> None:
    user_id = require_agent(actor)
    if state not in PRESENCE_STATES:
        raise bad_request(f"presence must be one of {', '.join(PRESENCE_STATES)}")
    if status_msg is not None and (not isinstance(status_msg, str) or len(status_msg) > 256):
        raise bad_request("status_msg must be a string of at most 256 characters")
    data: dict[str, Any] = {"state": state, "last_active_ms": svc.clock.now_ms()}
    if status_msg is not None:
        data["status_msg"] = status_msg
    await _publish_presence(svc, user_id, data)


async def mark_active(svc: Services, user_id: str) -> None:
    """An agent did something: it is online (announced again at most once a minute)."""
    current = svc.ephemeral.presence.get(user_id)
    now = svc.clock.now_ms()
    if (
        current is not None
        and current.state == "online"
        and now - current.last_active_ms < PRESENCE_REFRESH_MS
    ):
        return
    data: dict[str, Any] = {"state": "online", "last_active_ms": now}
    if current is not None and current.status_msg is not None:
        data["status_msg"] = current.status_msg
    await _publish_presence(svc, user_id, data)


async def mark_offline(svc: Services, user_id: str) -> None:
    current = svc.ephemeral.presence.get(user_id)
    if current is not None and current.state == "offline":
        return
    await _publish_presence(svc, user_id, {"state": "offline", "last_active_ms": svc.clock.now_ms()})


async def _publish_presence(svc: Services, user_id: str, data: dict[str, Any]) -> None:
    """Announce presence with the rooms the agent is in: only agents sharing one of them get it.

    Rooms with more than `presence_max_room_members` members are left out: in a room of thousands
    every arrival would otherwise be sent to everyone (a million frames when a thousand agents
    come online), which is also why Matrix servers limit presence in large rooms.
    """
    others = memberships.alias("others")
    size = (
        select(func.count())
        .where(and_(others.c.room_id == memberships.c.room_id, others.c.membership == "join"))
        .scalar_subquery()
    )
    async with svc.db.read() as conn:
        rooms = (
            await conn.execute(
                select(memberships.c.room_id)
                .where(
                    and_(
                        memberships.c.user_id == user_id,
                        memberships.c.membership == "join",
                        size <= svc.settings.presence_max_room_members,
                    )
                )
                .limit(MAX_PRESENCE_ROOMS)
            )
        ).scalars()
        data["rooms"] = sorted(rooms)
    await svc.ephemeral.publish("presence", None, user_id, data)


def get_presence(svc: Services, user_id: str) -> dict[str, Any]:
    return svc.ephemeral.presence_of(user_id)


async def send_receipt(
    svc: Services,
    actor: Actor,
    room_ref: str,
    event_id: str,
    receipt_type: str = "m.read",
    *,
    thread_id: str | None = None,
) -> None:
    """Mark an event read. `m.fully_read` is the read marker: it goes to the room's account data
    (as Matrix wants), not to the receipts. `thread_id` is accepted and ignored: receipts here are
    unthreaded."""
    user_id = require_agent(actor)
    room_id = await resolve_room(svc, room_ref)
    if receipt_type not in RECEIPT_TYPES:
        raise bad_request(f"receipt type must be one of {', '.join(RECEIPT_TYPES)}")
    if thread_id is not None and (not isinstance(thread_id, str) or not 0 < len(thread_id) <= 255):
        raise bad_request("thread_id must be a string of 1-255 characters")
    if receipt_type == "m.fully_read":
        await set_read_markers(svc, actor, room_id, fully_read=event_id)
        return
    await _require_event_in_room(svc, room_id, user_id, event_id)
    ts = svc.clock.now_ms()
    values = {
        "room_id": room_id,
        "user_id": user_id,
        "receipt_type": receipt_type,
        "event_id": event_id,
        "ts": ts,
    }
    insert = sqlite_insert if svc.db.is_sqlite else pg_insert
    stmt = insert(receipts).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["room_id", "user_id", "receipt_type"], set_={"event_id": event_id, "ts": ts}
    )
    async with svc.db.write() as conn:
        await conn.execute(stmt)
    if receipt_type != "m.read.private":
        await svc.ephemeral.publish(
            "receipt", room_id, user_id, {"event_id": event_id, "type": receipt_type, "ts": ts}
        )
    await mark_active(svc, user_id)


async def _require_event_in_room(svc: Services, room_id: str, user_id: str, event_id: str) -> None:
    async with svc.db.read() as conn:
        await require_joined(conn, room_id, user_id)
        target = await get_event(conn, event_id)
    if target is None or target.room_id != room_id:
        raise not_found(f"no event {event_id} in this room")


async def set_read_markers(
    svc: Services,
    actor: Actor,
    room_ref: str,
    *,
    fully_read: str | None = None,
    read: str | None = None,
    read_private: str | None = None,
) -> None:
    """Move the read marker (`m.fully_read`, room account data) and the read receipts at once."""
    user_id = require_agent(actor)
    room_id = await resolve_room(svc, room_ref)
    for value in (fully_read, read, read_private):
        if value is not None and not isinstance(value, str):
            raise bad_request("read markers must be event ids", "M_BAD_JSON")
    if fully_read is not None:
        await _require_event_in_room(svc, room_id, user_id, fully_read)
        await account_data.put(svc, actor, user_id, "m.fully_read", {"event_id": fully_read}, room_id)
    if read is not None:
        await send_receipt(svc, actor, room_id, read, "m.read")
    if read_private is not None:
        await send_receipt(svc, actor, room_id, read_private, "m.read.private")
    if fully_read is not None and read is None and read_private is None:
        await mark_active(svc, user_id)


async def receipts_content(svc: Services, room_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Matrix `m.receipt` content per room: {event_id: {type: {user: {ts}}}} (public receipts only)."""
    if not room_ids:
        return {}
    async with svc.db.read() as conn:
        rows = (
            await conn.execute(
                select(receipts).where(
                    and_(receipts.c.room_id.in_(room_ids), receipts.c.receipt_type != "m.read.private")
                )
            )
        ).all()
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        out.setdefault(r.room_id, {}).setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = {
            "ts": r.ts
        }
    return out
