"""The reads behind the Matrix /sync (actions/matrix_sync.py): prebuilt statements, and a read
connection that is only opened when a sync needs the database at all."""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import Executable, Result, and_, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.storage.tables import current_state, events, forgotten_rooms, memberships

MAX_HEROES = 5

TAIL = (
    select(events)
    .where(
        and_(
            events.c.room_id == bindparam("room_id"),
            events.c.position > bindparam("after"),
            events.c.position <= bindparam("upper"),
        )
    )
    .order_by(events.c.position.desc())
    .limit(bindparam("n"))
)
GAP_STATE = (
    select(events)
    .where(
        and_(
            events.c.room_id == bindparam("room_id"),
            events.c.position > bindparam("after"),
            events.c.position < bindparam("before"),
            events.c.state_key.is_not(None),
        )
    )
    .order_by(events.c.position)
)
MEMBER_COUNTS = (
    select(memberships.c.membership, func.count().label("n"))
    .where(
        and_(memberships.c.room_id == bindparam("room_id"), memberships.c.membership.in_(("join", "invite")))
    )
    .group_by(memberships.c.membership)
)
NAMED = select(func.count()).where(
    and_(
        current_state.c.room_id == bindparam("room_id"),
        current_state.c.type.in_((ev.NAME, ev.CANONICAL_ALIAS)),
        current_state.c.state_key == "",
    )
)
HERO_MEMBERS = (
    select(memberships.c.user_id)
    .where(
        and_(
            memberships.c.room_id == bindparam("room_id"),
            memberships.c.membership.in_(("join", "invite")),
            memberships.c.user_id != bindparam("me"),
        )
    )
    .order_by(memberships.c.position)
    .limit(MAX_HEROES)
)
OWN_MEMBER = (
    select(events)
    .select_from(memberships.join(events, events.c.event_id == memberships.c.event_id))
    .where(and_(memberships.c.room_id == bindparam("room_id"), memberships.c.user_id == bindparam("me")))
)

LEFT = (  # rooms left or banned from, minus those forgotten since (rooms.forget)
    select(memberships.c.room_id, memberships.c.position)
    .select_from(
        memberships.outerjoin(
            forgotten_rooms,
            and_(
                forgotten_rooms.c.user_id == memberships.c.user_id,
                forgotten_rooms.c.room_id == memberships.c.room_id,
                forgotten_rooms.c.position == memberships.c.position,
            ),
        )
    )
    .where(
        and_(
            memberships.c.user_id == bindparam("me"),
            memberships.c.membership.in_(("leave", "ban")),
            forgotten_rooms.c.room_id.is_(None),
        )
    )
    .order_by(memberships.c.room_id)
)
WAS_MEMBER = (
    select(events.c.position)
    .where(
        and_(
            events.c.room_id == bindparam("room_id"),
            events.c.type == ev.MEMBER,
            events.c.state_key == bindparam("me"),
            events.c.position < bindparam("stop"),
            events.c.content.contains('"membership":"join"'),
        )
    )
    .limit(1)
)


class LazyReader:
    """A read connection opened at the first statement: most incremental syncs need none."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self._stack: contextlib.AsyncExitStack | None = None
        self._conn: AsyncConnection | None = None

    async def execute(self, statement: Executable, params: dict[str, Any] | None = None) -> Result[Any]:
        if self._conn is None:
            self._stack = contextlib.AsyncExitStack()
            self._conn = await self._stack.enter_async_context(self.svc.db.read())
        return await self._conn.execute(statement, params)

    async def __aenter__(self) -> LazyReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = self._conn = None
