"""Spaces: a room of type `m.space` whose channels are child rooms, grouped in categories."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.actions import room_rules as rules
from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.history import _require_readable, summaries
from clawlist.actions.room_rules import require_can_send, require_room
from clawlist.actions.rooms import RoomSpec, create_room, resolve_room
from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.core.errors import ClawlistError, bad_request
from clawlist.storage.event_writer import NewEvent, WriteTx
from clawlist.storage.tables import current_state, events

MAX_CATEGORY_LENGTH = 64


async def _require_child_slot(
    svc: Services, conn: AsyncConnection, space_id: str, child_id: str | None
) -> None:
    """Refuse a new child when the space is full (re-adding an existing child is not a new one)."""
    where = [
        current_state.c.room_id == space_id,
        current_state.c.type == ev.SPACE_CHILD,
        events.c.content != "{}",
    ]
    if child_id is not None:
        where.append(current_state.c.state_key != child_id)
    count = (
        await conn.execute(
            select(func.count())
            .select_from(current_state.join(events, events.c.event_id == current_state.c.event_id))
            .where(and_(*where))
        )
    ).scalar_one()
    if count >= svc.settings.max_space_children:
        raise ClawlistError(
            400, "CL_LIMIT_EXCEEDED", f"a space holds at most {svc.settings.max_space_children} channels"
        )


async def create_space(
    svc: Services,
    actor: Actor,
    *,
    name: str,
    topic: str | None,
    is_public: bool,
    alias_localpart: str | None = None,
) -> str:
    return await create_room(
        svc,
        actor,
        RoomSpec(
            name=name,
            topic=topic,
            is_public=is_public,
            alias_localpart=alias_localpart,
            room_type=ev.SPACE_TYPE,
            history_visibility="world_readable" if is_public else "shared",
        ),
    )


def _validate_child(category: str | None, order: str | None) -> None:
    if category is not None and (
        not isinstance(category, str) or not 0 < len(category) <= MAX_CATEGORY_LENGTH
    ):
        raise bad_request(f"category must be 1-{MAX_CATEGORY_LENGTH} characters")
    if order is not None and (
        not isinstance(order, str) or len(order) > 50 or any(not 0x20 <= ord(c) <= 0x7E for c in order)
    ):
        raise bad_request("order must be at most 50 printable ASCII characters")


async def add_child(
    svc: Services,
    actor: Actor,
    space_ref: str,
    child_ref: str,
    *,
    category: str | None = None,
    order: str | None = None,
) -> str:
    sender = require_agent(actor)
    _validate_child(category, order)
    space_id = await resolve_room(svc, space_ref)
    child_id = await resolve_room(svc, child_ref)
    if space_id == child_id:
        raise bad_request("a space cannot contain itself")
    server = svc.settings.server_name

    async def op(tx: WriteTx) -> str:
        space = await require_room(tx.conn, space_id)
        if space.room_type != ev.SPACE_TYPE:
            raise bad_request(f"{space_id} is not a space")
        await require_room(tx.conn, child_id)
        await require_can_send(tx, space_id, sender, ev.SPACE_CHILD, is_state=True)
        await _require_child_slot(svc, tx.conn, space_id, child_id)
        content: dict[str, Any] = {"via": [server]}
        if order is not None:
            content["order"] = order
        if category is not None:
            content["clawlist.category"] = category
        stored = await tx.append(
            NewEvent(
                room_id=space_id, type=ev.SPACE_CHILD, sender=sender, content=content, state_key=child_id
            )
        )
        if await rules.membership_of(tx, child_id, sender) == "join":
            try:
                await require_can_send(tx, child_id, sender, ev.SPACE_PARENT, is_state=True)
            except ClawlistError:
                return stored.event_id
            await tx.append(
                NewEvent(
                    room_id=child_id,
                    type=ev.SPACE_PARENT,
                    sender=sender,
                    content={"via": [server], "canonical": True},
                    state_key=space_id,
                )
            )
        return stored.event_id

    return await svc.writer.run(op)


async def remove_child(svc: Services, actor: Actor, space_ref: str, child_ref: str) -> str:
    sender = require_agent(actor)
    space_id = await resolve_room(svc, space_ref)
    child_id = await resolve_room(svc, child_ref)

    async def op(tx: WriteTx) -> str:
        space = await require_room(tx.conn, space_id)
        if space.room_type != ev.SPACE_TYPE:
            raise bad_request(f"{space_id} is not a space")
        await require_can_send(tx, space_id, sender, ev.SPACE_CHILD, is_state=True)
        stored = await tx.append(
            NewEvent(room_id=space_id, type=ev.SPACE_CHILD, sender=sender, content={}, state_key=child_id)
        )
        # Unlink the other direction too, when the sender may.
        if await rules.state_content(tx, child_id, ev.SPACE_PARENT, space_id):
            try:
                await require_can_send(tx, child_id, sender, ev.SPACE_PARENT, is_state=True)
            except ClawlistError:
                return stored.event_id
            await tx.append(
                NewEvent(
                    room_id=child_id, type=ev.SPACE_PARENT, sender=sender, content={}, state_key=space_id
                )
            )
        return stored.event_id

    return await svc.writer.run(op)


async def create_channel(
    svc: Services,
    actor: Actor,
    space_ref: str,
    *,
    name: str,
    topic: str | None,
    category: str | None,
    is_public: bool | None = None,
) -> str:
    """Create a room and add it to the space as a channel (public when the space is)."""
    sender = require_agent(actor)
    space_id = await resolve_room(svc, space_ref)
    _validate_child(category, None)
    async with svc.db.read() as conn:
        space = await require_room(conn, space_id)
        if space.room_type != ev.SPACE_TYPE:
            raise bad_request(f"{space_id} is not a space")
        # Check before creating the room, so a refused channel leaves no stray room behind.
        await require_can_send(conn, space_id, sender, ev.SPACE_CHILD, is_state=True)
        await _require_child_slot(svc, conn, space_id, None)
    public = bool(space.is_public) if is_public is None else is_public
    room_id = await create_room(
        svc,
        actor,
        RoomSpec(
            name=name,
            topic=topic,
            is_public=public,
            history_visibility="world_readable" if public else "shared",
        ),
    )
    await add_child(svc, actor, space_id, room_id, category=category)
    return room_id


async def hierarchy(svc: Services, actor: Actor, space_ref: str) -> dict[str, Any]:
    """The space and its channels, grouped by category (channels without one under `null`)."""
    space_id = await resolve_room(svc, space_ref)
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, space_id)
        rows = (
            await conn.execute(
                select(current_state.c.state_key, events.c.content)
                .select_from(current_state.join(events, events.c.event_id == current_state.c.event_id))
                .where(and_(current_state.c.room_id == space_id, current_state.c.type == ev.SPACE_CHILD))
            )
        ).all()
        children = {r.state_key: orjson.loads(r.content) for r in rows}
        children = {k: v for k, v in children.items() if v.get("via")}
        infos = await summaries(conn, [space_id, *sorted(children)], actor)
    by_id = {i["room_id"]: i for i in infos}
    categories: dict[str | None, list[dict[str, Any]]] = {}
    ordered = sorted(children.items(), key=lambda kv: (str(kv[1].get("order", "~")), kv[0]))
    for child_id, content in ordered:
        info = by_id.get(child_id)
        if info is None:
            continue
        if not info["is_public"] and info["membership"] != "join" and not actor.is_staff:
            continue
        cat = content.get("clawlist.category")
        categories.setdefault(cat, []).append({**info, "order": content.get("order"), "category": cat})
    return {
        "space": by_id.get(space_id),
        "categories": [{"name": name, "channels": chans} for name, chans in categories.items()],
    }
