"""Matrix façade: rooms — createRoom, membership (join, leave, forget, invite, kick, ban, unban),
joined rooms, state, members and aliases. See docs/matrix.md."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from clawlist.actions import history, rooms
from clawlist.actions.rooms import RoomSpec
from clawlist.core import events as ev
from clawlist.core.errors import ClawlistError, bad_request
from clawlist.matrix.deps import CLIENT_V3, MatrixActorDep, ServicesDep, field, json_object
from clawlist.matrix.room_events import client_event, client_events

router = APIRouter()


@router.post(CLIENT_V3 + "/createRoom")
async def create_room(request: Request, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    body = await json_object(request)
    visibility = field(body, "visibility", str) or "private"
    if visibility not in ("public", "private"):
        raise bad_request("visibility must be 'public' or 'private'")
    invite = field(body, "invite", list) or []
    if any(not isinstance(u, str) for u in invite):
        raise bad_request("invite must be a list of user ids", "M_BAD_JSON")
    if field(body, "invite_3pid", list):
        raise bad_request("third-party (email) invites are not supported")
    spec = RoomSpec(
        name=field(body, "name", str),
        topic=field(body, "topic", str),
        preset=field(body, "preset", str),
        is_public=visibility == "public",
        alias_localpart=field(body, "room_alias_name", str),
        invite=invite,
        is_direct=bool(field(body, "is_direct", bool)),
        power_level_overrides=field(body, "power_level_content_override", dict),
        initial_state=field(body, "initial_state", list) or [],
        creation_content=field(body, "creation_content", dict),
        room_version=field(body, "room_version", str) or "10",
    )
    return {"room_id": await rooms.create_room(svc, actor, spec)}


async def _reason(request: Request) -> str | None:
    body = await json_object(request)
    reason: str | None = field(body, "reason", str)
    return reason


@router.post(CLIENT_V3 + "/join/{room_id_or_alias}")
async def join_by_id_or_alias(
    room_id_or_alias: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    """Join by id or alias (`server_name`/`via` are ignored: every room is on this server).
    Joining a room one is already in succeeds and changes nothing."""
    reason = await _reason(request)
    room_id = await rooms.resolve_room(svc, room_id_or_alias)
    await rooms.set_membership(svc, actor, room_id, None, "join", reason=reason)
    return {"room_id": room_id}


@router.post(CLIENT_V3 + "/rooms/{room_id}/join")
async def join(room_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    return await join_by_id_or_alias(room_id, request, svc, actor)


@router.post(CLIENT_V3 + "/rooms/{room_id}/leave")
async def leave(room_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    await rooms.leave(svc, actor, room_id, await _reason(request))
    return {}


@router.post(CLIENT_V3 + "/rooms/{room_id}/forget")
async def forget(room_id: str, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    await rooms.forget(svc, actor, room_id)
    return {}


async def _target(request: Request) -> tuple[str, str | None]:
    body = await json_object(request, empty_ok=False)
    user_id: str = field(body, "user_id", str, required=True)
    reason: str | None = field(body, "reason", str)
    return user_id, reason


@router.post(CLIENT_V3 + "/rooms/{room_id}/invite")
async def invite(room_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    user_id, reason = await _target(request)
    await rooms.invite(svc, actor, room_id, user_id, reason)
    return {}


@router.post(CLIENT_V3 + "/rooms/{room_id}/kick")
async def kick(room_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    user_id, reason = await _target(request)
    await rooms.kick(svc, actor, room_id, user_id, reason)
    return {}


@router.post(CLIENT_V3 + "/rooms/{room_id}/ban")
async def ban(room_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    user_id, reason = await _target(request)
    await rooms.ban(svc, actor, room_id, user_id, reason)
    return {}


@router.post(CLIENT_V3 + "/rooms/{room_id}/unban")
async def unban(room_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    user_id, reason = await _target(request)
    await rooms.unban(svc, actor, room_id, user_id, reason)
    return {}


@router.get(CLIENT_V3 + "/joined_rooms")
async def joined_rooms(svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    return {"joined_rooms": await rooms.joined_room_ids(svc, actor)}


@router.get(CLIENT_V3 + "/rooms/{room_id}/state")
async def get_state(room_id: str, svc: ServicesDep, actor: MatrixActorDep) -> list[dict[str, Any]]:
    return client_events(await history.state(svc, actor, room_id))


@router.get(CLIENT_V3 + "/rooms/{room_id}/state/{event_type}")
async def get_state_event(
    room_id: str, event_type: str, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    return await history.state_event(svc, actor, room_id, event_type, "")


@router.get(CLIENT_V3 + "/rooms/{room_id}/state/{event_type}/{state_key:path}")
async def get_state_event_key(
    room_id: str, event_type: str, state_key: str, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    """`state_key` may be empty: `/state/m.room.encryption/` is the empty key (404 when unset)."""
    return await history.state_event(svc, actor, room_id, event_type, state_key)


async def _put_state(
    svc: Any, actor: Any, room_id: str, event_type: str, state_key: str, request: Request
) -> dict[str, Any]:
    content = await json_object(request, empty_ok=False)
    if event_type == ev.MEMBER:
        if not state_key:
            raise ClawlistError(400, "M_BAD_JSON", "m.room.member needs a user id as state key")
        return {"event_id": await rooms.set_member_state(svc, actor, room_id, state_key, content)}
    return {"event_id": await rooms.set_state(svc, actor, room_id, event_type, state_key, content)}


@router.put(CLIENT_V3 + "/rooms/{room_id}/state/{event_type}")
async def put_state_event(
    room_id: str, event_type: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    return await _put_state(svc, actor, room_id, event_type, "", request)


@router.put(CLIENT_V3 + "/rooms/{room_id}/state/{event_type}/{state_key:path}")
async def put_state_event_key(
    room_id: str, event_type: str, state_key: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    return await _put_state(svc, actor, room_id, event_type, state_key, request)


@router.get(CLIENT_V3 + "/rooms/{room_id}/members")
async def members(
    room_id: str,
    svc: ServicesDep,
    actor: MatrixActorDep,
    at: str | None = None,
    membership: str | None = None,
    not_membership: str | None = None,
) -> dict[str, Any]:
    found = await history.members(
        svc, actor, room_id, membership or None, not_membership=not_membership or None, at=at or None
    )
    return {"chunk": [client_event(e) for e in found]}


@router.get(CLIENT_V3 + "/rooms/{room_id}/joined_members")
async def joined_members(room_id: str, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    return {"joined": await history.joined_members(svc, actor, room_id)}


@router.get(CLIENT_V3 + "/rooms/{room_id}/aliases")
async def aliases(room_id: str, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    readable = await history.require_readable(svc, actor, room_id)
    return {"aliases": await history.aliases(svc, readable)}
