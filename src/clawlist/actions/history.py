"""Reading rooms: timelines, single events, state, members, summaries and room lists."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, false, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.actions.actor import Actor
from clawlist.actions.room_rules import history_visibility, require_room
from clawlist.actions.rooms import resolve_room
from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.core.errors import bad_request, forbidden, not_found
from clawlist.core.filters import EventFilter
from clawlist.core.ids import check_text
from clawlist.core.visibility import can_read_history
from clawlist.storage.event_store import (
    StoredEvent,
    event_from_row,
    get_event,
    membership_of,
    room_state_events,
    state_content,
    state_contents,
)
from clawlist.storage.tables import events, memberships, room_aliases, rooms


def position_token(position: int) -> str:
    """A pagination token: a cursor *at* stream position `position`.

    Paging backwards (`dir=b`) from `p<N>` reads events at positions <= N, forwards (`dir=f`)
    positions >= N; the `end` of a page is the cursor at the first event it did not return.
    A sync timeline whose first event is at position P has `prev_batch = position_token(P - 1)`.
    `/messages` also takes a sync token `s<pos>_...` as `from`: the point just after `pos`.
    """
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


_SYNC_TOKEN = re.compile(r"^s([0-9]{1,18})_[0-9A-Za-z_]{0,80}$")


def token_bound(token: str, direction: str, *, role: str = "from") -> int:
    """The inclusive position bound a `from` or `to` token sets when paging in `direction`.

    `p<N>` is a cursor at N. A sync token `s<pos>_...` lies just after `pos`: as `from`, backwards
    starts at `pos` and forwards at `pos + 1`; as `to`, backwards stops at `pos + 1` and forwards
    at `pos`.
    """
    if isinstance(token, str) and token.startswith("s"):
        match = _SYNC_TOKEN.fullmatch(token)
        if match is None:
            raise bad_request(f"invalid pagination token {token!r}")
        pos = int(match.group(1))
        after = (direction == "b") == (role == "from")
        return pos if after else pos + 1
    return parse_position_token(token)


async def _require_readable(conn: AsyncConnection, actor: Actor, room_id: str) -> None:
    await require_room(conn, room_id)
    if actor.is_staff:
        return
    membership = await membership_of(conn, room_id, actor.principal_id) if actor.is_agent else None
    visibility = await history_visibility(conn, room_id)
    if not can_read_history(membership, visibility, actor.kind == "human"):
        raise forbidden("you are not a member of this room")


async def require_readable(svc: Services, actor: Actor, room_ref: str) -> str:
    """The room id, when the actor may read the room (404 unknown room, 403 not allowed)."""
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, room_id)
    return room_id


@dataclass
class Page:
    chunk: list[dict[str, Any]]
    start: str
    end: str | None
    state: list[dict[str, Any]] = field(default_factory=list)


#: Rows examined at most for one page when a filter runs in Python (contains_url); past it the page
#: ends early with an `end` token, so a sparse filter cannot make one request scan a whole room.
MAX_SCAN_ROWS = 5000


def like_pattern(pattern: str) -> str:
    """The SQL LIKE pattern (escape character `\\`) of a filter glob (`*` is any run)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def filter_clauses(event_filter: EventFilter | None) -> list[ColumnElement[bool]]:
    """SQL conditions for a filter's types (wildcards as LIKE) and senders."""
    if event_filter is None:
        return []
    out: list[ColumnElement[bool]] = []

    def match(column: Any, patterns: tuple[str, ...]) -> ColumnElement[bool]:
        exact = [p for p in patterns if "*" not in p]
        globs = [p for p in patterns if "*" in p]
        parts: list[ColumnElement[bool]] = []
        if exact:
            parts.append(column.in_(exact))
        parts.extend(column.like(like_pattern(p), escape="\\") for p in globs)
        return or_(*parts) if parts else false()

    if event_filter.types is not None:
        out.append(match(events.c.type, event_filter.types))
    if event_filter.not_types:
        out.append(not_(match(events.c.type, event_filter.not_types)))
    if event_filter.senders is not None:
        out.append(events.c.sender.in_(sorted(event_filter.senders)) if event_filter.senders else false())
    if event_filter.not_senders:
        out.append(events.c.sender.not_in(sorted(event_filter.not_senders)))
    return out


async def messages(
    svc: Services,
    actor: Actor,
    room_ref: str,
    *,
    from_token: str | None,
    direction: str,
    limit: int | None,
    to_token: str | None = None,
    event_filter: EventFilter | None = None,
) -> Page:
    """A page of the room's timeline. `from` may be omitted (the newest or oldest end), a page
    token or a sync token; `to` stops the page; the filter selects types and senders, and with
    `lazy_load_members` the page's `state` holds the member events of its senders."""
    if direction not in ("b", "f"):
        raise bad_request("dir must be 'b' (backwards) or 'f' (forwards)")
    limit = _limit(svc, limit)
    room_id = await resolve_room(svc, room_ref)
    backwards = direction == "b"
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, room_id)
        if from_token is None:
            start = await _room_edge(conn, room_id, direction)
        else:
            start = token_bound(from_token, direction)
        stop = None if to_token is None else token_bound(to_token, direction, role="to")
        base = select(events).where(events.c.room_id == room_id, *filter_clauses(event_filter))
        if stop is not None:
            base = base.where(events.c.position >= stop if backwards else events.c.position <= stop)
        python_filter = event_filter is not None and event_filter.contains_url is not None
        matched: list[StoredEvent] = []
        cursor = start
        resume: int | None = None
        scanned = 0
        while True:
            if backwards:
                query = base.where(events.c.position <= cursor).order_by(events.c.position.desc())
            else:
                query = base.where(events.c.position >= cursor).order_by(events.c.position.asc())
            batch = limit + 1
            rows = (await conn.execute(query.limit(batch))).all()
            for row in rows:
                found = event_from_row(row)
                if not python_filter or (
                    event_filter is not None
                    and event_filter.allows(found.type, found.sender, found.room_id, found.content)
                ):
                    matched.append(found)
                    if len(matched) > limit:
                        break
            scanned += len(rows)
            if len(matched) > limit or len(rows) < batch:
                break
            last = int(rows[-1]._mapping["position"])
            cursor = last - 1 if backwards else last + 1
            if scanned >= MAX_SCAN_ROWS:
                resume = cursor
                break
        page = matched[:limit]
        end = None
        if len(matched) > limit:
            end = position_token(matched[limit].position)
        elif resume is not None:
            end = position_token(resume)
        chunk = await render_events(conn, page, for_session=actor.session_id)
        state: list[dict[str, Any]] = []
        if event_filter is not None and event_filter.lazy_load_members and page:
            state = await member_events(conn, room_id, sorted({e.sender for e in page}))
    return Page(chunk=chunk, start=from_token or position_token(start), end=end, state=state)


async def render_events(
    conn: AsyncConnection, found: list[StoredEvent], *, for_session: str | None = None
) -> list[dict[str, Any]]:
    """Client-format events; a redacted event's `unsigned.redacted_because` is the whole redaction
    event (clients such as matrix-nio read its sender and reason)."""
    redaction_ids = sorted({e.redacted_by for e in found if e.redacted_by})
    redactions: dict[str, dict[str, Any]] = {}
    if redaction_ids:
        rows = (await conn.execute(select(events).where(events.c.event_id.in_(redaction_ids)))).all()
        for row in rows:
            redaction = event_from_row(row).to_client()
            redaction.pop("position", None)
            redactions[redaction["event_id"]] = redaction
    out = []
    for e in found:
        client = e.to_client(for_session=for_session)
        if e.redacted_by and e.redacted_by in redactions:
            client["unsigned"]["redacted_because"] = redactions[e.redacted_by]
        out.append(client)
    return out


async def member_events(conn: AsyncConnection, room_id: str, user_ids: list[str]) -> list[dict[str, Any]]:
    """The current member events of these users in the room (lazy-loaded members)."""
    if not user_ids:
        return []
    rows = (
        await conn.execute(
            select(events)
            .select_from(memberships.join(events, events.c.event_id == memberships.c.event_id))
            .where(and_(memberships.c.room_id == room_id, memberships.c.user_id.in_(user_ids)))
            .order_by(memberships.c.user_id)
        )
    ).all()
    return await render_events(conn, [event_from_row(r) for r in rows])


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
        return (await render_events(conn, [found], for_session=actor.session_id))[0]


async def state(svc: Services, actor: Actor, room_ref: str) -> list[dict[str, Any]]:
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, room_id)
        return await render_events(conn, await room_state_events(conn, room_id))


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
    svc: Services,
    actor: Actor,
    room_ref: str,
    membership: str | None = None,
    *,
    not_membership: str | None = None,
    at: str | None = None,
) -> list[dict[str, Any]]:
    """Member events of the room, now or `at` a pagination or sync token, optionally only those
    with (or without) a membership."""
    room_id = await resolve_room(svc, room_ref)
    for value, name in ((membership, "membership"), (not_membership, "not_membership")):
        if value is not None and value not in ev.MEMBERSHIPS:
            raise bad_request(f"{name} must be one of {', '.join(ev.MEMBERSHIPS)}")
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, room_id)
        if at is None:
            query = (
                select(events)
                .select_from(memberships.join(events, events.c.event_id == memberships.c.event_id))
                .where(memberships.c.room_id == room_id)
                .order_by(memberships.c.user_id)
            )
            if membership is not None:
                query = query.where(memberships.c.membership == membership)
            if not_membership is not None:
                query = query.where(memberships.c.membership != not_membership)
        else:
            bound = token_bound(at, "b")
            latest = (
                select(func.max(events.c.position).label("position"))
                .where(
                    and_(
                        events.c.room_id == room_id,
                        events.c.type == ev.MEMBER,
                        events.c.position <= bound,
                    )
                )
                .group_by(events.c.state_key)
                .subquery()
            )
            query = (
                select(events)
                .select_from(events.join(latest, events.c.position == latest.c.position))
                .order_by(events.c.state_key)
            )
        found = [event_from_row(r) for r in (await conn.execute(query)).all()]
        wanted = [
            e
            for e in found
            if (membership is None or e.content.get("membership") == membership)
            and (not_membership is None or e.content.get("membership") != not_membership)
        ]
        return await render_events(conn, wanted)


async def joined_members(svc: Services, actor: Actor, room_ref: str) -> dict[str, dict[str, Any]]:
    """{user id: {display_name, avatar_url}} of the joined members (as their member events say)."""
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, room_id)
        rows = (
            await conn.execute(
                select(memberships.c.user_id, events.c.content)
                .select_from(memberships.join(events, events.c.event_id == memberships.c.event_id))
                .where(and_(memberships.c.room_id == room_id, memberships.c.membership == "join"))
                .order_by(memberships.c.user_id)
            )
        ).all()
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        content = orjson.loads(row.content)
        name, avatar = content.get("displayname"), content.get("avatar_url")
        out[row.user_id] = {
            "display_name": name if isinstance(name, str) else None,
            "avatar_url": avatar if isinstance(avatar, str) else None,
        }
    return out


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
    states = await state_contents(conn, room_ids, wanted)
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
