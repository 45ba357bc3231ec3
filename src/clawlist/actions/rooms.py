"""Rooms: create, join, leave, invite, kick, ban, unban, and state changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from clawlist.actions import room_rules as rules
from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.room_rules import join_rule, power_levels, require_can_send, require_room
from clawlist.actions.services import Services
from clawlist.actions.users import resolve_agent
from clawlist.core import events as ev
from clawlist.core import ids, membership, power, presets
from clawlist.core.errors import ClawlistError, bad_request, forbidden, not_found
from clawlist.core.tokens import new_opaque_id
from clawlist.storage.event_store import membership_of
from clawlist.storage.event_writer import NewEvent, WriteTx
from clawlist.storage.tables import forgotten_rooms, memberships, room_aliases, rooms

PRESETS = presets.PRESETS


@dataclass
class RoomSpec:
    """A room to create. `is_public` lists it in the room directory; the preset (default:
    `public_chat` when public, else `private_chat`) sets who may join and read."""

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
    room_version: str = presets.DEFAULT_ROOM_VERSION
    creation_content: dict[str, Any] | None = None


def _validate_spec(spec: RoomSpec) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """(preset, initial_state, creation_content), checked."""
    if spec.name is not None and (not isinstance(spec.name, str) or len(spec.name) > 255):
        raise bad_request("name must be a string of at most 255 characters")
    if spec.topic is not None and (not isinstance(spec.topic, str) or len(spec.topic) > 4000):
        raise bad_request("topic must be a string of at most 4000 characters")
    preset = presets.choose_preset(spec.preset, spec.is_public)
    if spec.join_rule is not None and spec.join_rule not in ev.JOIN_RULES_ALLOWED:
        raise bad_request("join_rule must be public, invite or knock")
    if spec.history_visibility is not None and spec.history_visibility not in presets.HISTORY_VISIBILITIES:
        raise bad_request("history_visibility must be world_readable, shared, invited or joined")
    presets.check_room_version(spec.room_version)
    if len(spec.invite) > 100:
        raise bad_request("at most 100 invites at creation")
    if spec.room_type is not None and (
        not isinstance(spec.room_type, str) or not 0 < len(spec.room_type) <= presets.MAX_ROOM_TYPE_LENGTH
    ):
        raise bad_request(f"room type must be 1-{presets.MAX_ROOM_TYPE_LENGTH} characters")
    presets.check_power_override(spec.power_level_overrides)
    initial_state = presets.check_initial_state(spec.initial_state)
    creation = presets.check_creation_content(spec.creation_content)
    return preset, initial_state, creation


async def create_room(svc: Services, actor: Actor, spec: RoomSpec) -> str:
    """Create a room: its first events in the spec's order (see `core.presets`)."""
    creator = require_agent(actor)
    preset, initial_state, creation = _validate_spec(spec)
    room_type = spec.room_type or creation.get("type")
    server = svc.settings.server_name
    alias = (
        ids.validate_alias(ids.alias_for(ids.check_text(spec.alias_localpart, "alias"), server), server)
        if spec.alias_localpart is not None
        else None
    )
    async with svc.db.read() as conn:
        invitees = [(await resolve_agent(conn, u, server)) for u in spec.invite]
        me = await resolve_agent(conn, creator, server)
    if any(invitee.user_id == creator for invitee in invitees):
        raise bad_request("the creator is already in the room; do not invite yourself")
    invitees = list({invitee.user_id: invitee for invitee in invitees}.values())
    plan = presets.RoomPlan(
        creator=creator,
        creator_member=_member_content("join", me.display_name, me.avatar_url),
        preset=preset,
        room_version=spec.room_version,
        room_type=room_type,
        creation_content=creation,
        power_override=spec.power_level_overrides,
        alias=alias,
        join_rule=spec.join_rule,
        history_visibility=spec.history_visibility,
        metadata=spec.metadata,
        initial_state=initial_state,
        name=spec.name,
        topic=spec.topic,
        invites=[(i.user_id, _member_content("invite", i.display_name, i.avatar_url)) for i in invitees],
        is_direct=spec.is_direct,
    )
    planned = presets.initial_events(plan)
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
                room_type=room_type,
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
        for item in planned:
            await tx.append(
                NewEvent(
                    room_id=room_id,
                    type=item.type,
                    sender=creator,
                    content=item.content,
                    state_key=item.state_key,
                )
            )
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
    profile_update: bool = False,
) -> str:
    """Change a membership; returns the event id (or the current one when nothing changes).

    A join accepting an invite keeps the invite's `is_direct`. With `profile_update`, a member who
    is already joined and sends different `extra` (a per-room display name or avatar) gets a new
    join event; otherwise joining a room one is in changes nothing.
    """
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
        previous = (
            await rules.state_content(tx, room_id, ev.MEMBER, target)
            if new_membership == "join" and target_m in ("join", "invite")
            else None
        )
        if new_membership == "join" and target_m == "join":
            current = await _current_member_event(tx.conn, room_id, target)
            if not profile_update or not extra or previous is None:
                return current
            wanted = {**previous, **extra}
            if reason:
                wanted["reason"] = reason
            if wanted == previous:
                return current
            stored = await tx.append(
                NewEvent(room_id=room_id, type=ev.MEMBER, sender=sender, content=wanted, state_key=target)
            )
            return stored.event_id
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
        if new_membership == "join":
            content.update(membership.carried_into_join(previous))
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
    ev.refuse_encryption(event_type)
    ev.validate_state_content(event_type, content)

    async def op(tx: WriteTx) -> str:
        levels = await require_can_send(tx, room_id, sender, event_type, is_state=True)
        if event_type == ev.POWER_LEVELS and not power.can_change_power_levels(levels, content, sender):
            raise forbidden("you cannot grant or change power levels above your own")
        stored = await tx.append(
            NewEvent(room_id=room_id, type=event_type, sender=sender, content=content, state_key=state_key)
        )
        return stored.event_id

    return await svc.writer.run(op)


async def set_member_state(
    svc: Services, actor: Actor, room_ref: str, target_ref: str, content: dict[str, Any]
) -> str:
    """`PUT /state/m.room.member/{user}`: the membership APIs, reached through the state endpoint
    (a per-room display name or avatar for oneself; join, leave, invite, kick, ban, unban)."""
    sender = require_agent(actor)
    if not isinstance(content, dict):
        raise bad_request("state content must be a JSON object", "M_BAD_JSON")
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        target = (await resolve_agent(conn, target_ref, svc.settings.server_name)).user_id
        current = await membership_of(conn, room_id, target)
    action = membership.membership_for_state(sender, target, current, content.get("membership"))
    reason = content.get("reason")
    extra: dict[str, Any] = {}
    for key in ("displayname", "avatar_url"):
        value = content.get(key)
        if value is not None:
            extra[key] = ids.check_text(value, key, 1024)
    if content.get("is_direct") is True:
        extra["is_direct"] = True
    if action in ("join", "invite"):
        return await set_membership(
            svc, actor, room_id, target, action, reason=reason, extra=extra, profile_update=True
        )
    if action == "kick":
        return await kick(svc, actor, room_id, target, reason)
    if action == "unban":
        return await unban(svc, actor, room_id, target, reason)
    return await set_membership(svc, actor, room_id, target, action, reason=reason)


async def forget(svc: Services, actor: Actor, room_ref: str) -> str:
    """Forget a room one has left: it no longer appears in the agent's syncs (`include_leave`)
    until its membership changes again (a new invite or join brings it back)."""
    user_id = require_agent(actor)
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.write() as conn:
        await require_room(conn, room_id)
        row = (
            await conn.execute(
                select(memberships.c.membership, memberships.c.position).where(
                    and_(memberships.c.room_id == room_id, memberships.c.user_id == user_id)
                )
            )
        ).first()
        if row is not None and row.membership in ("join", "invite", "knock"):
            raise ClawlistError(400, "M_UNKNOWN", f"{user_id} is still in {room_id}; leave it first")
        if row is None:
            return room_id  # never a member: nothing to forget
        values = {"position": int(row.position), "forgotten_ts": svc.clock.now_ms()}
        insert = sqlite_insert(forgotten_rooms) if svc.db.is_sqlite else pg_insert(forgotten_rooms)
        await conn.execute(
            insert.values(user_id=user_id, room_id=room_id, **values).on_conflict_do_update(
                index_elements=["user_id", "room_id"], set_=values
            )
        )
    return room_id


async def joined_room_ids(svc: Services, actor: Actor) -> list[str]:
    """The rooms the agent has joined (not those it is only invited to)."""
    user_id = require_agent(actor)
    async with svc.db.read() as conn:
        return list(
            (
                await conn.execute(
                    select(memberships.c.room_id)
                    .where(and_(memberships.c.user_id == user_id, memberships.c.membership == "join"))
                    .order_by(memberships.c.room_id)
                )
            ).scalars()
        )
