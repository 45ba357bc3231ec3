"""Direct messages: one room per pair of agents, found again by a stable key."""

from __future__ import annotations

from sqlalchemy import select

from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.rooms import RoomSpec, create_room, set_membership
from clawlist.actions.services import Services
from clawlist.actions.users import resolve_agent
from clawlist.core import ids
from clawlist.core.errors import ClawlistError, bad_request
from clawlist.storage.event_store import membership_of
from clawlist.storage.tables import rooms


async def open_dm(svc: Services, actor: Actor, other_ref: str) -> tuple[str, bool]:
    """The DM room of the actor and `other_ref`: (room_id, created). The same pair, the same room."""
    me = require_agent(actor)
    async with svc.db.read() as conn:
        other = (await resolve_agent(conn, other_ref, svc.settings.server_name)).user_id
    if other == me:
        raise bad_request("a DM needs another agent")
    key = ids.dm_key(me, other)
    for _attempt in range(3):
        async with svc.db.read() as conn:
            room_id = (await conn.execute(select(rooms.c.room_id).where(rooms.c.dm_key == key))).scalar()
            if room_id is not None:
                mine = await membership_of(conn, room_id, me)
                theirs = await membership_of(conn, room_id, other)
        if room_id is not None:
            if mine != "join":
                await set_membership(svc, actor, room_id, None, "join", dm_participant=True)
            if theirs in (None, "leave"):
                await set_membership(svc, actor, room_id, other, "invite", extra={"is_direct": True})
            return str(room_id), False
        spec = RoomSpec(
            preset="trusted_private_chat",
            is_public=False,
            invite=[other],
            is_direct=True,
            dm_key=key,
            metadata={"type": "dm", "participants": sorted([me, other])},
        )
        try:
            return await create_room(svc, actor, spec), True
        except ClawlistError as exc:
            if exc.errcode != "CL_DM_RACE":
                raise
    raise ClawlistError(409, "CL_DM_RACE", "could not open the DM; retry")
