"""What one user may see of the stream: the rooms they are in, kept current as events pass."""

from __future__ import annotations

from sqlalchemy import and_, or_, select

from clawlist.actions.actor import Actor
from clawlist.actions.feed import FeedEvent
from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.storage.event_store import StoredEvent, event_from_row
from clawlist.storage.tables import events, memberships


class Viewer:
    """The visibility filter of one user: joined rooms plus their own membership changes."""

    def __init__(self, user_id: str, joined: set[str], invited: set[str]) -> None:
        self.user_id = user_id
        self.joined = joined
        self.invited = invited

    @classmethod
    async def load(cls, svc: Services, actor: Actor) -> Viewer:
        async with svc.db.read() as conn:
            rows = (
                await conn.execute(
                    select(memberships.c.room_id, memberships.c.membership).where(
                        memberships.c.user_id == actor.principal_id
                    )
                )
            ).all()
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
        return event.room_id in self.joined


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
