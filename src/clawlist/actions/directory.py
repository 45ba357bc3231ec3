"""Room aliases (`#name:server` -> room id) and the public room directory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.room_rules import power_levels, require_can_send, require_joined, require_room
from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.core import ids, power
from clawlist.core.errors import ClawlistError, bad_request, forbidden, not_found
from clawlist.storage.event_store import state_contents
from clawlist.storage.tables import memberships, room_aliases, rooms


async def resolve_alias(svc: Services, alias: str) -> dict[str, Any]:
    ids.split_id(alias, "#", "alias")
    async with svc.db.read() as conn:
        room_id = (
            await conn.execute(select(room_aliases.c.room_id).where(room_aliases.c.alias == alias))
        ).scalar()
    if room_id is None:
        raise not_found(f"no room with alias {alias}")
    return {"room_id": room_id, "alias": alias, "servers": [svc.settings.server_name]}


async def create_alias(svc: Services, actor: Actor, alias: str, room_id: str) -> None:
    sender = require_agent(actor)
    ids.validate_alias(alias, svc.settings.server_name)
    ids.split_id(ids.check_text(room_id, "room_id"), "!", "room_id")
    try:
        async with svc.db.write() as conn:
            await require_joined(conn, room_id, sender)
            if (
                await conn.execute(select(room_aliases.c.alias).where(room_aliases.c.alias == alias))
            ).first():
                raise ClawlistError(409, "M_UNKNOWN", f"alias {alias} already exists")
            await conn.execute(
                room_aliases.insert().values(
                    alias=alias, room_id=room_id, creator=sender, created_ts=svc.clock.now_ms()
                )
            )
    except IntegrityError as exc:
        raise ClawlistError(409, "M_UNKNOWN", f"alias {alias} already exists") from exc


async def delete_alias(svc: Services, actor: Actor, alias: str) -> None:
    sender = require_agent(actor)
    ids.split_id(ids.check_text(alias, "alias"), "#", "alias")
    async with svc.db.write() as conn:
        row = (await conn.execute(select(room_aliases).where(room_aliases.c.alias == alias))).first()
        if row is None:
            raise not_found(f"no room with alias {alias}")
        if row.creator != sender:
            levels = await power_levels(conn, row.room_id)
            if power.user_level(levels, sender) < power.MODERATOR:
                raise forbidden("only the alias creator or a room moderator can delete it")
        await conn.execute(delete(room_aliases).where(room_aliases.c.alias == alias))


# -- the public room directory (Matrix /publicRooms) ------------------------------------------------

_DIRECTORY_STATE = (
    ev.NAME,
    ev.TOPIC,
    ev.CANONICAL_ALIAS,
    ev.AVATAR,
    ev.JOIN_RULES,
    ev.HISTORY_VISIBILITY,
    ev.GUEST_ACCESS,
)
MAX_DIRECTORY_PAGE = 500
MAX_SEARCH_TERM = 255


@dataclass
class DirectoryPage:
    chunk: list[dict[str, Any]]
    next_batch: str | None
    prev_batch: str | None
    total: int


def _offset(since: str | None) -> int:
    if since is None or since == "":
        return 0
    if not isinstance(since, str) or not since.startswith("d") or not since[1:].isdigit() or len(since) > 12:
        raise bad_request(f"invalid directory token {since!r}")
    return int(since[1:])


def _directory_entry(room_id: str, room_type: str | None, members: int, st: dict[str, Any]) -> dict[str, Any]:
    """One `publicRooms` chunk entry; optional keys are left out when unset (clients' schemas
    want strings there, not nulls)."""
    entry: dict[str, Any] = {
        "room_id": room_id,
        "num_joined_members": members,
        "world_readable": st.get(ev.HISTORY_VISIBILITY, {}).get("history_visibility") == "world_readable",
        "guest_can_join": st.get(ev.GUEST_ACCESS, {}).get("guest_access") == "can_join",
        "join_rule": str(st.get(ev.JOIN_RULES, {}).get("join_rule", "invite")),
    }
    for key, event_type, field_name in (
        ("name", ev.NAME, "name"),
        ("topic", ev.TOPIC, "topic"),
        ("canonical_alias", ev.CANONICAL_ALIAS, "alias"),
        ("avatar_url", ev.AVATAR, "url"),
    ):
        value = st.get(event_type, {}).get(field_name)
        if isinstance(value, str) and value:
            entry[key] = value
    if room_type is not None:
        entry["room_type"] = room_type
    return entry


async def public_rooms(
    svc: Services,
    *,
    limit: int | None = None,
    since: str | None = None,
    search_term: str | None = None,
    room_types: list[str | None] | None = None,
) -> DirectoryPage:
    """The rooms listed in the directory (`visibility: public`), most members first, then by id;
    `search_term` matches name, topic, alias and room id case-insensitively. Pages are offsets
    (`d<n>`), so a page may shift when rooms gain members between requests."""
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise bad_request("limit must be a non-negative integer")
    n = min(limit if limit else svc.settings.default_page_size, MAX_DIRECTORY_PAGE)
    offset = _offset(since)
    if search_term is not None:
        search_term = ids.check_text(search_term, "generic_search_term", MAX_SEARCH_TERM).casefold()
    if room_types is not None and (
        not isinstance(room_types, list) or any(t is not None and not isinstance(t, str) for t in room_types)
    ):
        raise bad_request("room_types must be a list of strings or nulls", "M_BAD_JSON")
    public = select(rooms.c.room_id).where(rooms.c.is_public.is_(True))
    async with svc.db.read() as conn:
        room_rows = (
            await conn.execute(select(rooms.c.room_id, rooms.c.room_type).where(rooms.c.is_public.is_(True)))
        ).all()
        states = await state_contents(conn, public, _DIRECTORY_STATE)
        counts: dict[str, int] = {
            row.room_id: int(row.n)
            for row in (
                await conn.execute(
                    select(memberships.c.room_id, func.count().label("n"))
                    .where(and_(memberships.c.room_id.in_(public), memberships.c.membership == "join"))
                    .group_by(memberships.c.room_id)
                )
            )
        }
    entries = []
    for row in room_rows:
        if room_types is not None and row.room_type not in room_types:
            continue
        entry = _directory_entry(
            row.room_id, row.room_type, counts.get(row.room_id, 0), states.get(row.room_id, {})
        )
        if search_term:
            haystack = " ".join(
                str(entry.get(k, "")) for k in ("name", "topic", "canonical_alias", "room_id")
            ).casefold()
            if search_term not in haystack:
                continue
        entries.append(entry)
    entries.sort(key=lambda e: (-e["num_joined_members"], e["room_id"]))
    page = entries[offset : offset + n]
    return DirectoryPage(
        chunk=page,
        next_batch=f"d{offset + n}" if offset + n < len(entries) else None,
        prev_batch=f"d{max(0, offset - n)}" if offset > 0 else None,
        total=len(entries),
    )


async def room_visibility(svc: Services, room_id: str) -> str:
    """`public` when the room is listed in the directory, else `private`."""
    ids.split_id(room_id, "!", "room_id")
    async with svc.db.read() as conn:
        row = await require_room(conn, room_id)
    return "public" if row.is_public else "private"


async def set_room_visibility(svc: Services, actor: Actor, room_id: str, visibility: str) -> None:
    """List or unlist a room. Needs the power to change the room's canonical alias (moderators by
    default), like Synapse."""
    sender = require_agent(actor)
    ids.split_id(room_id, "!", "room_id")
    if visibility not in ("public", "private"):
        raise bad_request("visibility must be 'public' or 'private'")
    async with svc.db.write() as conn:
        await require_room(conn, room_id)
        await require_can_send(conn, room_id, sender, ev.CANONICAL_ALIAS, is_state=True)
        await conn.execute(
            update(rooms).where(rooms.c.room_id == room_id).values(is_public=visibility == "public")
        )
