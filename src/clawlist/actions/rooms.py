"""Rooms: create, join, leave, invite, kick, ban, unban, and state changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from clawlist.actions import room_rules as rules
from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.room_rules import join_rule, power_levels, require_can_send, require_room
from clawlist.actions.services import Services
from clawlist.actions.users import resolve_agent
from clawlist.core import events as ev
from clawlist.core import ids, membership, power
from clawlist.core.errors import ClawlistError, bad_request, forbidden, not_found
from clawlist.core.tokens import new_opaque_id
from clawlist.storage.event_store import membership_of
from clawlist.storage.event_writer import NewEvent, WriteTx
from clawlist.storage.tables import room_aliases, rooms

PRESETS = ("private_chat", "trusted_private_chat", "public_chat")


@dataclass
class RoomSpec:
    name: str | None = None
    topic: str | None = None
    preset: str | None = None  # default: public_chat when public, else private_chat
    is_public: bool = False
    alias_localpart: str | None = None
    room_type: str | None = None
    invite: list[str] = field(default_factory=list)
    is_direct: bool = False
    power_level_overrides: dict[str, Any] | None = None
    initial_state: list[dict[str, Any]] = field(default_factory=list)
    history_visibility: str | None = None
    join_rule: str | None = None
    metadata: dict[str, Any] | None = None
    dm_key: str | None = None
    room_version: str = "10"


def _validate_spec(spec: RoomSpec) -> None:
    if spec.name is not None and (not isinstance(spec.name, str) or len(spec.name) > 255):
        raise bad_request("name must be a string of at most 255 characters")
    if spec.topic is not None and (not isinstance(spec.topic, str) or len(spec.topic) > 4000):
        raise bad_request("topic must be a string of at most 4000 characters")
    if spec.preset is not None and spec.preset not in PRESETS:
        raise bad_request(f"preset must be one of {', '.join(PRESETS)}")
    if spec.join_rule is not None and spec.join_rule not in ("public", "invite", "knock"):
        raise bad_request("join_rule must be public, invite or knock")
    if spec.history_visibility is not None and spec.history_visibility not in (
        "world_readable",
        "shared",
        "invited",
        "joined",
    ):
        raise bad_request("history_visibility must be world_readable, shared, invited or joined")
    if spec.room_version not in ("10", "11"):
        raise ClawlistError(400, "M_UNSUPPORTED_ROOM_VERSION", "room versions 10 and 11 are supported")
    if len(spec.invite) > 100:
        raise bad_request("at most 100 invites at creation")
    for item in spec.initial_state:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("type"), str)
            or not isinstance(item.get("content"), dict)
        ):
            raise bad_request("initial_state items need a string 'type' and an object 'content'")
        ev.validate_event_type(item["type"])
        ev.validate_state_key(item.get("state_key", ""))


async def create_room(svc: Services, actor: Actor, spec: RoomSpec) -> str:
    creator = require_agent(actor)
    _validate_spec(spec)
    server = svc.settings.server_name
    alias = (
        ids.validate_alias(ids.alias_for(spec.alias_localpart, server), server)
        if spec.alias_localpart is not None
        else None
    )
    async with svc.db.read() as conn:
        invitees = [(await resolve_agent(conn, u, server)) for u in spec.invite]
    if any(invitee.user_id == creator for invitee in invitees):
        raise bad_request("the creator is already in the room; do not invite yourself")
    invitees = list({invitee.user_id: invitee for invitee in invitees}.values())
    preset = spec.preset or ("public_chat" if spec.is_public else "private_chat")
    room_id = ids.room_id_for(new_opaque_id(svc.rng, 18), server)

    async def op(tx: WriteTx) -> str:
        conn = tx.conn
        if (
            alias is not None
            and (
                await conn.execute(select(room_aliases.c.alias).where(room_aliases.c.alias == alias))
            ).first()
        ):
            raise ClawlistError(400, "M_ROOM_IN_USE", f"alias {alias} is taken")
        now = tx.now_ms()
        await conn.execute(
            rooms.insert().values(
                room_id=room_id,
                creator=creator,
                room_type=spec.room_type,
                is_public=spec.is_public,
                is_direct=spec.is_direct,
                dm_key=spec.dm_key,
                depth=0,
                created_ts=now,
            )
        )
        if alias is not None:
            await conn.execute(
                room_aliases.insert().values(alias=alias, room_id=room_id, creator=creator, created_ts=now)
            )
        create_content: dict[str, Any] = {"room_version": spec.room_version}
        if spec.room_version == "10":
            create_content["creator"] = creator
        if spec.room_type is not None:
            create_content["type"] = spec.room_type

        async def state(event_type: str, content: dict[str, Any], state_key: str = "") -> None:
            await tx.append(
                NewEvent(
                    room_id=room_id, type=event_type, sender=creator, content=content, state_key=state_key
                )
            )

        await state(ev.CREATE, create_content)
        me = await resolve_agent(conn, creator, server)
        await state(ev.MEMBER, _member_content("join", me.display_name, me.avatar_url), creator)
        levels = power.default_power_levels(creator)
        if preset == "trusted_private_chat":
            for invitee in invitees:
                levels["users"][invitee.user_id] = power.OWNER
        if spec.power_level_overrides:
            levels = power.default_power_levels(creator, spec.power_level_overrides)
        await state(ev.POWER_LEVELS, levels)
        if alias is not None:
            await state(ev.CANONICAL_ALIAS, {"alias": alias})
        rule = spec.join_rule or ("public" if preset == "public_chat" else "invite")
        await state(ev.JOIN_RULES, {"join_rule": rule})
        visibility = spec.history_visibility or "shared"
        await state(ev.HISTORY_VISIBILITY, {"history_visibility": visibility})
        if spec.metadata is not None:
            await state(ev.ROOM_METADATA, spec.metadata)
        for item in spec.initial_state:
            state_key = item.get("state_key", "")
            if not isinstance(state_key, str):
                raise bad_request("initial_state state_key must be a string")
            if item["type"] == ev.MEMBER:
                raise bad_request("initial_state may not contain membership events")
            await state(item["type"], item["content"], state_key)
        if spec.name is not None:
            await state(ev.NAME, {"name": spec.name})
        if spec.topic is not None:
            await state(ev.TOPIC, {"topic": spec.topic})
        for invitee in invitees:
            content = _member_content("invite", invitee.display_name, invitee.avatar_url)
            if spec.is_direct:
                content["is_direct"] = True
            await state(ev.MEMBER, content, invitee.user_id)
        return room_id

    try:
        return await svc.writer.run(op)
    except IntegrityError as exc:
        if spec.dm_key is not None:
            raise ClawlistError(409, "CL_DM_RACE", "this DM was created concurrently; retry") from exc
        raise ClawlistError(400, "M_ROOM_IN_USE", "alias taken") from exc


def _member_content(membership_value: str, displayname: str | None, avatar_url: str | None) -> dict[str, Any]:
    content: dict[str, Any] = {"membership": membership_value}
    if displayname:
        content["displayname"] = displayname
    if avatar_url:
        content["avatar_url"] = avatar_url
    return content


async def resolve_room(svc: Services, room_ref: str) -> str:
    """A room id from a room id or an alias."""
    if not isinstance(room_ref, str) or not room_ref:
        raise bad_request("room id or alias is required")
    if room_ref.startswith("#"):
        ids.split_id(room_ref, "#", "alias")
        async with svc.db.read() as conn:
            room_id = (
                await conn.execute(select(room_aliases.c.room_id).where(room_aliases.c.alias == room_ref))
            ).scalar()
        if room_id is None:
            raise not_found(f"no room with alias {room_ref}")
        return str(room_id)
    if room_ref.startswith("!"):
        ids.split_id(room_ref, "!", "room_id")
        return room_ref
    raise bad_request(f"{room_ref!r} is neither a room id (!x:server) nor an alias (#x:server)")


async def set_membership(
    svc: Services,
    actor: Actor,
    room_ref: str,
    target_ref: str | None,
    new_membership: str,
    *,
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
    dm_participant: bool = False,
) -> str:
    """Change a membership; returns the event id (or the current one when nothing changes)."""
    sender = require_agent(actor)
    room_id = await resolve_room(svc, room_ref)
    server = svc.settings.server_name
    if reason is not None and (not isinstance(reason, str) or len(reason) > 1000):
        raise bad_request("reason must be a string of at most 1000 characters")
    async with svc.db.read() as conn:
        target_agent = await resolve_agent(conn, target_ref or sender, server)
    target = target_agent.user_id

    async def op(tx: WriteTx) -> str:
        await require_room(tx, room_id)
        sender_m = await rules.membership_of(tx, room_id, sender)
        target_m = sender_m if target == sender else await rules.membership_of(tx, room_id, target)
        if new_membership == "join" and target_m == "join":
            return await _current_member_event(tx.conn, room_id, target)
        levels = await power_levels(tx, room_id)
        rule = await join_rule(tx, room_id)
        if dm_participant and new_membership == "join" and target_m != "ban":
            rule = "public"  # a DM's participants may always come back to it
        membership.check_transition(
            sender=sender,
            target=target,
            sender_membership=sender_m,
            target_membership=target_m,
            new_membership=new_membership,
            join_rule=rule,
            levels=levels,
        )
        content = (
            _member_content(new_membership, target_agent.display_name, target_agent.avatar_url)
            if new_membership in ("join", "invite")
            else {"membership": new_membership}
        )
        if reason:
            content["reason"] = reason
        if extra:
            content.update(extra)
        stored = await tx.append(
            NewEvent(room_id=room_id, type=ev.MEMBER, sender=sender, content=content, state_key=target)
        )
        return stored.event_id

    return await svc.writer.run(op)


async def _current_member_event(conn: Any, room_id: str, user_id: str) -> str:
    from clawlist.storage.tables import memberships

    return str(
        (
            await conn.execute(
                select(memberships.c.event_id).where(
                    (memberships.c.room_id == room_id) & (memberships.c.user_id == user_id)
                )
            )
        ).scalar_one()
    )


async def join(svc: Services, actor: Actor, room_ref: str) -> str:
    room_id = await resolve_room(svc, room_ref)
    await set_membership(svc, actor, room_id, None, "join")
    return room_id


async def leave(svc: Services, actor: Actor, room_ref: str, reason: str | None = None) -> str:
    room_id = await resolve_room(svc, room_ref)
    await set_membership(svc, actor, room_id, None, "leave", reason=reason)
    return room_id


async def invite(svc: Services, actor: Actor, room_ref: str, user: str, reason: str | None = None) -> str:
    return await set_membership(svc, actor, room_ref, user, "invite", reason=reason)


async def kick(svc: Services, actor: Actor, room_ref: str, user: str, reason: str | None = None) -> str:
    async with svc.db.read() as conn:
        target = (await resolve_agent(conn, user, svc.settings.server_name)).user_id
    if target == actor.principal_id:
        raise bad_request("use leave to leave a room")
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        current = await membership_of(conn, room_id, target)
    if current == "ban":
        raise forbidden(f"{target} is banned; use unban")
    return await set_membership(svc, actor, room_id, target, "leave", reason=reason)


async def ban(svc: Services, actor: Actor, room_ref: str, user: str, reason: str | None = None) -> str:
    return await set_membership(svc, actor, room_ref, user, "ban", reason=reason)


async def unban(svc: Services, actor: Actor, room_ref: str, user: str, reason: str | None = None) -> str:
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        target = (await resolve_agent(conn, user, svc.settings.server_name)).user_id
        current = await membership_of(conn, room_id, target)
    if current != "ban":
        raise bad_request(f"{target} is not banned")
    return await set_membership(svc, actor, room_id, target, "leave", reason=reason)


async def set_state(
    svc: Services, actor: Actor, room_ref: str, event_type: str, state_key: str, content: dict[str, Any]
) -> str:
    sender = require_agent(actor)
    room_id = await resolve_room(svc, room_ref)
    ev.validate_event_type(event_type)
    ev.validate_state_key(state_key)
    if not isinstance(content, dict):
        raise bad_request("state content must be a JSON object", "M_BAD_JSON")
    if event_type == ev.MEMBER:
        raise bad_request("change memberships with join, leave, invite, kick, ban and unban")
    if event_type == ev.CREATE:
        raise forbidden("m.room.create cannot be changed")
    _validate_state_content(event_type, content)

    async def op(tx: WriteTx) -> str:
        levels = await require_can_send(tx, room_id, sender, event_type, is_state=True)
        if event_type == ev.POWER_LEVELS and not power.can_change_power_levels(levels, content, sender):
            raise forbidden("you cannot grant or change power levels above your own")
        stored = await tx.append(
            NewEvent(room_id=room_id, type=event_type, sender=sender, content=content, state_key=state_key)
        )
        return stored.event_id

    return await svc.writer.run(op)


def _validate_state_content(event_type: str, content: dict[str, Any]) -> None:
    if event_type == ev.NAME and not isinstance(content.get("name", ""), str):
        raise bad_request("m.room.name needs a string 'name'", "M_BAD_JSON")
    if event_type == ev.TOPIC and not isinstance(content.get("topic", ""), str):
        raise bad_request("m.room.topic needs a string 'topic'", "M_BAD_JSON")
    if event_type == ev.JOIN_RULES and content.get("join_rule") not in ("public", "invite", "knock"):
        raise bad_request("join_rule must be public, invite or knock", "M_BAD_JSON")
    if event_type == ev.POWER_LEVELS:
        for key in ("users", "events"):
            if key in content and not isinstance(content[key], dict):
                raise bad_request(f"power levels '{key}' must be an object", "M_BAD_JSON")
            for value in (content.get(key) or {}).values():
                if not isinstance(value, int) or isinstance(value, bool):
                    raise bad_request("power levels must be integers", "M_BAD_JSON")
