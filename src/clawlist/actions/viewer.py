"""What one user may see of the stream: the rooms they are in, kept current as events pass."""

from __future__ import annotations

import orjson
from sqlalchemy import and_, bindparam, or_, select

from clawlist.actions.actor import Actor
from clawlist.actions.feed import FeedEvent
from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.storage.event_store import StoredEvent, event_from_row
from clawlist.storage.tables import events, memberships

_MEMBERSHIPS_OF = select(memberships.c.room_id, memberships.c.membership, memberships.c.position).where(
    memberships.c.user_id == bindparam("user_id")
)


class Viewer:
    """The visibility filter of one user: joined rooms plus their own membership changes."""

    def __init__(
        self, user_id: str, joined: set[str], invited: set[str], until: dict[str, int] | None = None
    ) -> None:
        self.user_id = user_id
        self.joined = joined
        self.invited = invited
        #: Rooms left since the reader's starting point: visible up to (and with) the leave.
        self.until: dict[str, int] = until or {}
        #: Membership in each room at the starting point (`load_since` only).
        self.prior: dict[str, str | None] = {}

    @classmethod
    async def load(cls, svc: Services, actor: Actor) -> Viewer:
        async with svc.db.read() as conn:
            rows = (await conn.execute(_MEMBERSHIPS_OF, {"user_id": actor.principal_id})).all()
        return cls(
            actor.principal_id,
            {r.room_id for r in rows if r.membership == "join"},
            {r.room_id for r in rows if r.membership == "invite"},
        )

    def accept(self, event: StoredEvent) -> bool:
        """Whether the user sees `event`; updates the filter when it is their own membership change."""
        if event.type == ev.MEMBER and event.state_key == self.user_id:
            membership = event.content.get("membership")
            if membership == "join":
                self.joined.add(event.room_id)
                self.invited.discard(event.room_id)
            elif membership == "invite":
                self.invited.add(event.room_id)
            else:
                self.joined.discard(event.room_id)
                self.invited.discard(event.room_id)
            return True
        if event.room_id in self.joined:
            return True
        if self.until:
            stop = self.until.get(event.room_id)
            return stop is not None and event.position <= stop
        return False

    @classmethod
    async def load_since(cls, svc: Services, actor: Actor, since: int) -> Viewer:
        """The viewer of someone reading on from position `since`: rooms joined now, plus rooms
        left after `since` that they were in at `since` (visible up to the leave), and `prior`,
        each room's membership at `since` (None: none)."""
        user_id = actor.principal_id
        async with svc.db.read() as conn:
            rows = (await conn.execute(_MEMBERSHIPS_OF, {"user_id": user_id})).all()
            changed = sorted(r.room_id for r in rows if r.position > since)
            before: dict[str, tuple[int, str | None]] = {}
            if changed:
                history = (
                    await conn.execute(
                        select(events.c.room_id, events.c.position, events.c.content).where(
                            and_(
                                events.c.type == ev.MEMBER,
                                events.c.state_key == user_id,
                                events.c.room_id.in_(changed),
                                events.c.position <= since,
                            )
                        )
                    )
                ).all()
                for h in history:
                    if h.room_id not in before or before[h.room_id][0] < h.position:
                        membership = orjson.loads(h.content).get("membership")
                        before[h.room_id] = (int(h.position), str(membership) if membership else None)
        viewer = cls(
            user_id,
            {r.room_id for r in rows if r.membership == "join"},
            {r.room_id for r in rows if r.membership == "invite"},
        )
        for r in rows:
            if r.position > since:
                prior = before.get(r.room_id, (0, None))[1]
                viewer.prior[r.room_id] = prior
                if prior == "join" and r.membership not in ("join", "invite"):
                    viewer.until[r.room_id] = int(r.position)
            else:
                viewer.prior[r.room_id] = str(r.membership)
        return viewer


async def replay(
    svc: Services, viewer: Viewer, after: int, until: int, limit: int
) -> tuple[list[FeedEvent], int]:
    """Visible events with `after < position <= until`, oldest first, at most `limit`.

    Returns them and the position read up to (so a caller pages on from there). Rooms the user has
    left since `after` contribute their events up to the leave.
    """
    async with svc.db.read() as conn:
        changed = (
            await conn.execute(
                select(memberships.c.room_id, memberships.c.membership, memberships.c.position).where(
                    and_(memberships.c.user_id == viewer.user_id, memberships.c.position > after)
                )
            )
        ).all()
        left_until = {r.room_id: int(r.position) for r in changed if r.membership not in ("join", "invite")}
        rooms = set(viewer.joined) | set(left_until)
        if not rooms:
            own = events.c.type == ev.MEMBER
            condition = and_(own, events.c.state_key == viewer.user_id)
        else:
            condition = or_(
                events.c.room_id.in_(sorted(rooms)),
                and_(events.c.type == ev.MEMBER, events.c.state_key == viewer.user_id),
            )
        rows = (
            await conn.execute(
                select(events)
                .where(and_(events.c.position > after, events.c.position <= until, condition))
                .order_by(events.c.position)
                .limit(limit)
            )
        ).all()
    out = []
    for row in rows:
        event = event_from_row(row)
        stop = left_until.get(event.room_id)
        is_own_membership = event.type == ev.MEMBER and event.state_key == viewer.user_id
        if stop is not None and event.position > stop and not is_own_membership:
            continue
        out.append(FeedEvent(event))
    reached = int(rows[-1].position) if len(rows) == limit else until
    return out, reached
