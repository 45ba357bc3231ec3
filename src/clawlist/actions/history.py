"""Reading rooms: timelines, single events, state, members, summaries and room lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.actions.actor import Actor
from clawlist.actions.room_rules import history_visibility, require_room
from clawlist.actions.rooms import resolve_room
from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.core.errors import bad_request, forbidden, not_found
from clawlist.core.ids import check_text
from clawlist.core.visibility import can_read_history
from clawlist.storage.event_store import (
    StoredEvent,
    event_from_row,
    get_event,
    membership_of,
    room_state_events,
    state_content,
)
from clawlist.storage.tables import current_state, events, memberships, room_aliases, rooms


def position_token(position: int) -> str:
    return f"p{position}"


def parse_position_token(token: str) -> int:
    if (
        not isinstance(token, str)
        or not token.startswith("p")
        or not token[1:].isascii()
        or not token[1:].isdigit()
        or len(token) > 19
    ):
        raise bad_request(f"invalid pagination token {token!r}")
    return int(token[1:])


async def _require_readable(conn: AsyncConnection, actor: Actor, room_id: str) -> None:
    await require_room(conn, room_id)
    if actor.is_staff:
        return
    membership = await membership_of(conn, room_id, actor.principal_id) if actor.is_agent else None
    visibility = await history_visibility(conn, room_id)
    if not can_read_history(membership, visibility, actor.kind == "human"):
        raise forbidden("you are not a member of this room")


@dataclass
class Page:
    chunk: list[dict[str, Any]]
    start: str
    end: str | None


async def messages(
    svc: Services,
    actor: Actor,
    room_ref: str,
    *,
    from_token: str | None,
    direction: str,
    limit: int | None,
) -> Page:
    if direction not in ("b", "f"):
        raise bad_request("dir must be 'b' (backwards) or 'f' (forwards)")
    limit = _limit(svc, limit)
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, room_id)
        if from_token is None:
            start = await _room_edge(conn, room_id, direction)
        else:
            start = parse_position_token(from_token)
        query = select(events).where(events.c.room_id == room_id)
        if direction == "b":
            query = query.where(events.c.position <= start).order_by(events.c.position.desc())
        else:
            query = query.where(events.c.position >= start).order_by(events.c.position.asc())
        rows = (await conn.execute(query.limit(limit + 1))).all()
    page = [event_from_row(r) for r in rows[:limit]]
    end = None
    if len(rows) > limit:
        nxt = rows[limit]._mapping["position"]
        end = position_token(int(nxt))
    return Page(
        chunk=[e.to_client(for_session=actor.session_id) for e in page],
        start=position_token(start),
        end=end,
    )


async def _room_edge(conn: AsyncConnection, room_id: str, direction: str) -> int:
    agg = func.max(events.c.position) if direction == "b" else func.min(events.c.position)
    value = (await conn.execute(select(agg).where(events.c.room_id == room_id))).scalar()
    return int(value or 0)


def _limit(svc: Services, limit: int | None) -> int:
    if limit is None:
        return svc.settings.default_page_size
    if not isinstance(limit, int) or limit < 1:
        raise bad_request("limit must be a positive integer")
    return min(limit, svc.settings.max_page_size)


async def event(svc: Services, actor: Actor, room_ref: str, event_id: str) -> dict[str, Any]:
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, room_id)
        found = await get_event(conn, event_id)
    if found is None or found.room_id != room_id:
        raise not_found(f"no event {event_id} in this room")
    return found.to_client(for_session=actor.session_id)


async def state(svc: Services, actor: Actor, room_ref: str) -> list[dict[str, Any]]:
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, room_id)
        found = await room_state_events(conn, room_id)
    return [e.to_client() for e in found]


async def state_event(
    svc: Services, actor: Actor, room_ref: str, event_type: str, state_key: str
) -> dict[str, Any]:
    ev.validate_event_type(event_type)
    ev.validate_state_key(state_key)
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, room_id)
        content = await state_content(conn, room_id, event_type, state_key)
    if content is None:
        raise not_found(f"no {event_type} state with key {state_key!r} in this room")
    return content


async def members(
    svc: Services, actor: Actor, room_ref: str, membership: str | None = None
) -> list[dict[str, Any]]:
    room_id = await resolve_room(svc, room_ref)
    if membership is not None and membership not in ev.MEMBERSHIPS:
        raise bad_request(f"membership must be one of {', '.join(ev.MEMBERSHIPS)}")
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, room_id)
        query = (
            select(events)
            .select_from(memberships.join(events, events.c.event_id == memberships.c.event_id))
            .where(memberships.c.room_id == room_id)
        )
        if membership:
            query = query.where(memberships.c.membership == membership)
        rows = (await conn.execute(query.order_by(memberships.c.user_id))).all()
    return [event_from_row(r).to_client() for r in rows]


async def summary(svc: Services, actor: Actor, room_ref: str) -> dict[str, Any]:
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, room_id)
        return (await summaries(conn, [room_id], actor))[0]


async def summaries(conn: AsyncConnection, room_ids: list[str], actor: Actor | None) -> list[dict[str, Any]]:
    if not room_ids:
        return []
    room_rows: dict[str, Any] = {
        r.room_id: r for r in (await conn.execute(select(rooms).where(rooms.c.room_id.in_(room_ids))))
    }
    wanted = (ev.NAME, ev.TOPIC, ev.CANONICAL_ALIAS, ev.ROOM_METADATA, ev.JOIN_RULES)
    state_rows = (
        await conn.execute(
            select(current_state.c.room_id, current_state.c.type, events.c.content)
            .select_from(current_state.join(events, events.c.event_id == current_state.c.event_id))
            .where(
                and_(
                    current_state.c.room_id.in_(room_ids),
                    current_state.c.type.in_(wanted),
                    current_state.c.state_key == "",
                )
            )
        )
    ).all()
    states: dict[str, dict[str, dict[str, Any]]] = {}
    for state_row in state_rows:
        states.setdefault(state_row.room_id, {})[state_row.type] = orjson.loads(state_row.content)
    counts: dict[str, int] = dict(
        (
            await conn.execute(
                select(memberships.c.room_id, func.count())
                .where(and_(memberships.c.room_id.in_(room_ids), memberships.c.membership == "join"))
                .group_by(memberships.c.room_id)
            )
        ).all()
    )
    mine: dict[str, str] = {}
    if actor is not None and actor.is_agent:
        mine = {
            r.room_id: r.membership
            for r in (
                await conn.execute(
                    select(memberships.c.room_id, memberships.c.membership).where(
                        and_(memberships.c.room_id.in_(room_ids), memberships.c.user_id == actor.principal_id)
                    )
                )
            )
        }
    out = []
    for room_id in room_ids:
        row = room_rows.get(room_id)
        if row is None:
            continue
        st = states.get(room_id, {})
        out.append(
            {
                "room_id": room_id,
                "name": st.get(ev.NAME, {}).get("name"),
                "topic": st.get(ev.TOPIC, {}).get("topic"),
                "alias": st.get(ev.CANONICAL_ALIAS, {}).get("alias"),
                "room_type": row.room_type,
                "is_public": bool(row.is_public),
                "is_direct": bool(row.is_direct),
                "join_rule": st.get(ev.JOIN_RULES, {}).get("join_rule"),
                "metadata": st.get(ev.ROOM_METADATA),
                "joined_members": int(counts.get(room_id, 0)),
                "creator": row.creator,
                "created_ts": row.created_ts,
                "membership": mine.get(room_id),
            }
        )
    return out


async def joined_rooms(svc: Services, actor: Actor) -> list[dict[str, Any]]:
    async with svc.db.read() as conn:
        ids = [
            r.room_id
            for r in (
                await conn.execute(
                    select(memberships.c.room_id)
                    .where(
                        and_(
                            memberships.c.user_id == actor.principal_id,
                            memberships.c.membership.in_(("join", "invite")),
                        )
                    )
                    .order_by(memberships.c.room_id)
                )
            )
        ]
        return await summaries(conn, ids, actor)


async def public_rooms(
    svc: Services,
    actor: Actor | None,
    *,
    room_type: str | None,
    after: str | None,
    limit: int | None,
) -> tuple[list[dict[str, Any]], str | None]:
    n = _limit(svc, limit)
    query = select(rooms.c.room_id).where(rooms.c.is_public.is_(True))
    if room_type == "space":
        query = query.where(rooms.c.room_type == ev.SPACE_TYPE)
    elif room_type == "room":
        query = query.where(rooms.c.room_type.is_(None))
    elif room_type is not None:
        raise bad_request("type must be 'room' or 'space'")
    if after:
        query = query.where(rooms.c.room_id > check_text(after, "cursor"))
    async with svc.db.read() as conn:
        ids = [r.room_id for r in (await conn.execute(query.order_by(rooms.c.room_id).limit(n + 1)))]
        items = await summaries(conn, ids[:n], actor)
    return items, (ids[n - 1] if len(ids) > n else None)


async def aliases(svc: Services, room_id: str) -> list[str]:
    async with svc.db.read() as conn:
        return [
            r.alias
            for r in (
                await conn.execute(
                    select(room_aliases.c.alias)
                    .where(room_aliases.c.room_id == room_id)
                    .order_by(room_aliases.c.alias)
                )
            )
        ]


async def events_after(conn: AsyncConnection, room_id: str, position: int, limit: int) -> list[StoredEvent]:
    rows = (
        await conn.execute(
            select(events)
            .where(and_(events.c.room_id == room_id, events.c.position > position))
            .order_by(events.c.position)
            .limit(limit)
        )
    ).all()
    return [event_from_row(r) for r in rows]
