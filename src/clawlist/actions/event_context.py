"""Reading around one event: its context (events before and after) and the events relating to it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, select

from clawlist.actions.actor import Actor
from clawlist.actions.history import (
    _limit,
    _require_readable,
    filter_clauses,
    member_events,
    position_token,
    render_events,
    token_bound,
)
from clawlist.actions.rooms import resolve_room
from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.core.errors import bad_request, not_found
from clawlist.core.filters import EventFilter
from clawlist.storage.event_store import event_from_row, get_event, room_state_events
from clawlist.storage.tables import events

DEFAULT_CONTEXT_LIMIT = 10
#: Relation types that are not relations in Matrix' sense: replies and our redaction link.
NOT_RELATIONS = ("m.in_reply_to", "m.redaction")


async def context(
    svc: Services,
    actor: Actor,
    room_ref: str,
    event_id: str,
    *,
    limit: int | None = None,
    event_filter: EventFilter | None = None,
) -> dict[str, Any]:
    """The event, up to `limit // 2` events before it and the rest after it, tokens to page on
    from either side (`start` backwards, `end` forwards) and the room state (only the members of
    the returned events' senders with `lazy_load_members`)."""
    if limit is None:
        limit = DEFAULT_CONTEXT_LIMIT
    if not isinstance(limit, int) or limit < 0:
        raise bad_request("limit must be a non-negative integer")
    limit = min(limit, svc.settings.max_page_size)
    before_limit = limit // 2
    after_limit = limit - before_limit
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, room_id)
        target = await get_event(conn, event_id)
        if target is None or target.room_id != room_id:
            raise not_found(f"no event {event_id} in this room")
        where = [events.c.room_id == room_id, *filter_clauses(event_filter)]
        python_filter = event_filter is not None and event_filter.contains_url is not None
        before_rows = (
            await conn.execute(
                select(events)
                .where(and_(*where, events.c.position < target.position))
                .order_by(events.c.position.desc())
                .limit(before_limit)
            )
        ).all()
        after_rows = (
            await conn.execute(
                select(events)
                .where(and_(*where, events.c.position > target.position))
                .order_by(events.c.position.asc())
                .limit(after_limit)
            )
        ).all()
        before = [event_from_row(r) for r in before_rows]
        after = [event_from_row(r) for r in after_rows]
        start = (before[-1].position if before else target.position) - 1
        end = (after[-1].position if after else target.position) + 1
        if python_filter and event_filter is not None:
            before = [e for e in before if event_filter.allows(e.type, e.sender, e.room_id, e.content)]
            after = [e for e in after if event_filter.allows(e.type, e.sender, e.room_id, e.content)]
        rendered = await render_events(conn, [target, *before, *after], for_session=actor.session_id)
        if event_filter is not None and event_filter.lazy_load_members:
            senders = sorted({e.sender for e in (target, *before, *after)})
            state = await member_events(conn, room_id, senders)
        else:
            state = await render_events(conn, await room_state_events(conn, room_id))
    return {
        "event": rendered[0],
        "events_before": rendered[1 : 1 + len(before)],
        "events_after": rendered[1 + len(before) :],
        "start": position_token(max(start, 0)),
        "end": position_token(end),
        "state": state,
    }


async def relations(
    svc: Services,
    actor: Actor,
    room_ref: str,
    event_id: str,
    *,
    rel_type: str | None = None,
    event_type: str | None = None,
    from_token: str | None = None,
    to_token: str | None = None,
    direction: str = "b",
    limit: int | None = None,
) -> dict[str, Any]:
    """Events relating to `event_id` (annotations, edits, threads, references; not replies, not
    redacted ones), newest first by default, paged with `next_batch`."""
    if direction not in ("b", "f"):
        raise bad_request("dir must be 'b' (backwards) or 'f' (forwards)")
    if rel_type is not None:
        ev.validate_event_type(rel_type)
    if event_type is not None:
        ev.validate_event_type(event_type)
    n = _limit(svc, limit)
    backwards = direction == "b"
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        await _require_readable(conn, actor, room_id)
        parent = await get_event(conn, event_id)
        if parent is None or parent.room_id != room_id:
            raise not_found(f"no event {event_id} in this room")
        query = select(events).where(
            and_(
                events.c.room_id == room_id,
                events.c.relates_to == event_id,
                events.c.rel_type.not_in(NOT_RELATIONS),
                events.c.redacted_by.is_(None),
            )
        )
        if rel_type is not None:
            query = query.where(events.c.rel_type == rel_type)
        if event_type is not None:
            query = query.where(events.c.type == event_type)
        if from_token is not None:
            start = token_bound(from_token, direction)
            query = query.where(events.c.position <= start if backwards else events.c.position >= start)
        if to_token is not None:
            stop = token_bound(to_token, direction, role="to")
            query = query.where(events.c.position >= stop if backwards else events.c.position <= stop)
        order = events.c.position.desc() if backwards else events.c.position.asc()
        rows = (await conn.execute(query.order_by(order).limit(n + 1))).all()
        found = [event_from_row(r) for r in rows]
        chunk = await render_events(conn, found[:n], for_session=actor.session_id)
    out: dict[str, Any] = {"chunk": chunk}
    if len(found) > n:
        out["next_batch"] = position_token(found[n].position)
    if from_token is not None:
        out["prev_batch"] = from_token
    return out
