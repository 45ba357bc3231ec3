"""An agent's public profile as Matrix shows it (display name, avatar), and changes to it.

A change is stored on the agent and, like Synapse does, announced in every room the agent has
joined with a new `m.room.member` event (membership `join`, the new `displayname`/`avatar_url`),
so clients that name people from the room state see it.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import and_, select

from clawlist.actions import users
from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.core.errors import ClawlistError, forbidden
from clawlist.storage.event_writer import NewEvent, WriteTx
from clawlist.storage.tables import memberships

log = logging.getLogger("clawlist.profile")

#: Member events written per writer operation when a profile change is announced.
ROOMS_PER_WRITE = 100
MAX_DISPLAYNAME = 255
MAX_AVATAR_URL = 1024


async def get_profile(svc: Services, user_ref: str) -> dict[str, Any]:
    """`{displayname, avatar_url}` with the unset ones left out; 404 for an unknown agent."""
    agent = await users.find_agent(svc, user_ref)
    out: dict[str, Any] = {}
    if agent.display_name is not None:
        out["displayname"] = agent.display_name
    if agent.avatar_url is not None:
        out["avatar_url"] = agent.avatar_url
    return out


async def _own(svc: Services, actor: Actor, user_ref: str) -> str:
    """The acting agent's user id if `user_ref` names it: 404 for nobody, 403 for someone else."""
    me = require_agent(actor)
    if user_ref != me:
        other = await users.find_agent(svc, user_ref)
        if other.user_id != me:
            raise forbidden("you can only change your own profile")
    return me


def _clean(value: Any, name: str, limit: int) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ClawlistError(400, "M_BAD_JSON", f"{name} must be a string")
    if value is not None and len(value) > limit:
        raise ClawlistError(400, "M_TOO_LARGE", f"{name} is longer than {limit} characters")
    if value is not None and "\x00" in value:
        raise ClawlistError(400, "M_BAD_JSON", f"{name} must not contain NUL")
    return value or None  # "" clears it


async def set_displayname(svc: Services, actor: Actor, user_ref: str, displayname: Any) -> None:
    me = await _own(svc, actor, user_ref)
    await _change(
        svc, actor, me, "display_name", "displayname", _clean(displayname, "displayname", MAX_DISPLAYNAME)
    )


async def set_avatar_url(svc: Services, actor: Actor, user_ref: str, avatar_url: Any) -> None:
    me = await _own(svc, actor, user_ref)
    await _change(
        svc, actor, me, "avatar_url", "avatar_url", _clean(avatar_url, "avatar_url", MAX_AVATAR_URL)
    )


async def _change(
    svc: Services, actor: Actor, user_id: str, column: str, member_key: str, value: str | None
) -> None:
    before = await users.find_agent(svc, user_id)
    if getattr(before, column) == value:
        return
    await users.update_profile(svc, actor, {column: value})
    await announce_in_rooms(svc, user_id, {member_key: value})


#: Profile columns that rooms show on the member event, and their key there.
MEMBER_KEYS = {"display_name": "displayname", "avatar_url": "avatar_url"}


async def update_agent_profile(svc: Services, actor: Actor, changes: dict[str, Any]) -> users.AgentRecord:
    """The native API's profile change (display name, avatar, bio): stored, and a changed display
    name or avatar is announced in the agent's joined rooms, as a Matrix profile change is."""
    user_id = require_agent(actor)
    before = await users.find_agent(svc, user_id)
    after = await users.update_profile(svc, actor, changes)
    shown = {
        key: getattr(after, column)
        for column, key in MEMBER_KEYS.items()
        if column in changes and getattr(before, column) != getattr(after, column)
    }
    if shown:
        await announce_in_rooms(svc, user_id, shown)
    return after


async def announce_in_rooms(svc: Services, user_id: str, changes: dict[str, str | None]) -> int:
    """Write a fresh `m.room.member` join event, carrying `changes`, in every room the agent has
    joined; returns how many were written. A failing batch is logged and skipped: the profile
    itself is already stored."""
    async with svc.db.read() as conn:
        room_ids = list(
            (
                await conn.execute(
                    select(memberships.c.room_id)
                    .where(and_(memberships.c.user_id == user_id, memberships.c.membership == "join"))
                    .order_by(memberships.c.room_id)
                )
            ).scalars()
        )
    written = 0
    for start in range(0, len(room_ids), ROOMS_PER_WRITE):
        chunk = room_ids[start : start + ROOMS_PER_WRITE]

        async def op(tx: WriteTx, chunk: list[str] = chunk) -> int:
            count = 0
            for room_id in chunk:
                if await tx.membership_of(room_id, user_id) != "join":
                    continue
                current = await tx.state_content(room_id, ev.MEMBER, user_id) or {}
                content = {k: v for k, v in current.items() if k != "reason"}
                content["membership"] = "join"
                for key, value in changes.items():
                    if value is None:
                        content.pop(key, None)
                    else:
                        content[key] = value
                if content == current:
                    continue
                await tx.append(
                    NewEvent(
                        room_id=room_id, type=ev.MEMBER, sender=user_id, content=content, state_key=user_id
                    )
                )
                count += 1
            return count

        try:
            written += await svc.writer.run(op)
        except ClawlistError as exc:
            log.warning("profile change of %s not announced in %d rooms: %s", user_id, len(chunk), exc)
    return written
