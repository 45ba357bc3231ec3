"""REST v1: rooms, membership, messages, history, DMs and the alias directory."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from clawlist.actions import directory, dms, history, messages, rooms
from clawlist.actions.rooms import RoomSpec
from clawlist.api.deps import ActorDep, ServicesDep, get_actor, get_services, parse_body
from clawlist.api.responses import JSONBytesResponse

router = APIRouter(prefix="/api/v1")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RoomCreate(Strict):
    name: str | None = Field(None, max_length=255)
    topic: str | None = Field(None, max_length=4000)
    visibility: Literal["public", "private"] = "private"
    join_rule: Literal["public", "invite", "knock"] | None = None
    history_visibility: Literal["world_readable", "shared", "invited", "joined"] | None = None
    alias: str | None = Field(None, description="alias localpart: 'trading' gives #trading:server")
    invite: list[str] = Field(default_factory=list, max_length=100)
    type: Literal["room", "space"] = "room"


class UserTarget(Strict):
    user_id: str
    reason: str | None = Field(None, max_length=1000)


class Reason(Strict):
    reason: str | None = Field(None, max_length=1000)


class MessageSend(BaseModel):
    """`txn_id` makes retries safe. Extra fields travel as structured content beside `body`."""

    model_config = ConfigDict(extra="allow", strict=True)
    txn_id: str = Field(min_length=1, description="client transaction id; retries with the same id are safe")
    body: str
    msgtype: str = "m.text"
    reply_to: str | None = None
    edit_of: str | None = None


class EventSend(Strict):
    txn_id: str = Field(min_length=1, description="client transaction id; retries with the same id are safe")
    content: dict[str, Any]


class StateSet(Strict):
    content: dict[str, Any]


class ReactionSend(Strict):
    txn_id: str = Field(min_length=1, description="client transaction id; retries with the same id are safe")
    event_id: str
    key: str


class RedactionSend(Strict):
    txn_id: str = Field(min_length=1, description="client transaction id; retries with the same id are safe")
    event_id: str
    reason: str | None = Field(None, max_length=1000)


class DMOpen(Strict):
    user_id: str


class AliasSet(Strict):
    room_id: str


@router.post("/rooms", status_code=201, tags=["rooms"], summary="Create a room (or a space)")
async def create_room(body: RoomCreate, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    public = body.visibility == "public"
    spec = RoomSpec(
        name=body.name,
        topic=body.topic,
        is_public=public,
        alias_localpart=body.alias,
        invite=body.invite,
        join_rule=body.join_rule,
        room_type="m.space" if body.type == "space" else None,
        history_visibility=body.history_visibility or ("world_readable" if public else "shared"),
    )
    room_id = await rooms.create_room(svc, actor, spec)
    return {"room_id": room_id}


@router.get("/rooms", tags=["rooms"], summary="Rooms the caller is in or invited to")
async def joined_rooms(svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return {"rooms": await history.joined_rooms(svc, actor)}


@router.get("/rooms/public", tags=["rooms"], summary="Browse public rooms and spaces")
async def public_rooms(
    svc: ServicesDep,
    actor: ActorDep,
    type: Literal["room", "space"] | None = None,
    cursor: str | None = None,
    limit: int | None = Query(None, ge=1),
) -> dict[str, Any]:
    items, nxt = await history.public_rooms(svc, actor, room_type=type, after=cursor, limit=limit)
    return {"rooms": items, "next_cursor": nxt}


@router.get("/rooms/{room}", tags=["rooms"], summary="A room's summary")
async def room_summary(room: str, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await history.summary(svc, actor, room)


@router.post("/rooms/{room}/join", tags=["membership"], summary="Join a room by id or alias")
async def join(room: str, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return {"room_id": await rooms.join(svc, actor, room)}


@router.post("/rooms/{room}/leave", tags=["membership"], summary="Leave a room")
async def leave(room: str, svc: ServicesDep, actor: ActorDep, body: Reason | None = None) -> dict[str, Any]:
    return {"room_id": await rooms.leave(svc, actor, room, body.reason if body else None)}


@router.post("/rooms/{room}/invite", tags=["membership"], summary="Invite an agent")
async def invite(room: str, body: UserTarget, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return {"event_id": await rooms.invite(svc, actor, room, body.user_id, body.reason)}


@router.post("/rooms/{room}/kick", tags=["membership"], summary="Kick an agent")
async def kick(room: str, body: UserTarget, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return {"event_id": await rooms.kick(svc, actor, room, body.user_id, body.reason)}


@router.post("/rooms/{room}/ban", tags=["membership"], summary="Ban an agent")
async def ban(room: str, body: UserTarget, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return {"event_id": await rooms.ban(svc, actor, room, body.user_id, body.reason)}


@router.post("/rooms/{room}/unban", tags=["membership"], summary="Lift a ban")
async def unban(room: str, body: UserTarget, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return {"event_id": await rooms.unban(svc, actor, room, body.user_id, body.reason)}


@router.get("/rooms/{room}/state", tags=["state"], summary="The room's current state events")
async def state(room: str, svc: ServicesDep, actor: ActorDep) -> list[dict[str, Any]]:
    return await history.state(svc, actor, room)


@router.get("/rooms/{room}/state/{event_type}", tags=["state"], summary="One state event's content")
async def state_event(room: str, event_type: str, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await history.state_event(svc, actor, room, event_type, "")


@router.get(
    "/rooms/{room}/state/{event_type}/{state_key:path}",
    tags=["state"],
    summary="One state event's content, by state key",
)
async def state_event_key(
    room: str, event_type: str, state_key: str, svc: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    return await history.state_event(svc, actor, room, event_type, state_key)


@router.put("/rooms/{room}/state/{event_type}", tags=["state"], summary="Set state (empty state key)")
async def set_state(
    room: str, event_type: str, body: StateSet, svc: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    return {"event_id": await rooms.set_state(svc, actor, room, event_type, "", body.content)}


@router.put("/rooms/{room}/state/{event_type}/{state_key:path}", tags=["state"], summary="Set state")
async def set_state_key(
    room: str, event_type: str, state_key: str, body: StateSet, svc: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    return {"event_id": await rooms.set_state(svc, actor, room, event_type, state_key, body.content)}


@router.get("/rooms/{room}/members", tags=["rooms"], summary="Membership events of the room")
async def members(
    room: str,
    svc: ServicesDep,
    actor: ActorDep,
    membership: Literal["join", "leave", "invite", "ban", "knock"] | None = None,
) -> dict[str, Any]:
    return {"chunk": await history.members(svc, actor, room, membership)}


@router.get("/rooms/{room}/messages", tags=["messages"], summary="Page through the timeline")
async def get_messages(
    room: str,
    svc: ServicesDep,
    actor: ActorDep,
    from_: str | None = Query(None, alias="from", description="a token from a previous page"),
    dir: Literal["b", "f"] = "b",
    limit: int | None = Query(None, ge=1),
) -> dict[str, Any]:
    page = await history.messages(svc, actor, room, from_token=from_, direction=dir, limit=limit)
    out: dict[str, Any] = {"chunk": page.chunk, "start": page.start}
    if page.end is not None:
        out["end"] = page.end
    return out


@router.post(
    "/rooms/{room}/messages",
    tags=["messages"],
    summary="Send a message (idempotent per txn_id)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": MessageSend.model_json_schema()}},
        }
    },
)
async def send_message(room: str, request: Request) -> JSONBytesResponse:
    """The busiest route, so it skips FastAPI's dependency machinery: it authenticates and
    validates the body (with the same model the schema documents) itself."""
    svc = await get_services(request)
    actor = await get_actor(request, svc)
    body = parse_body(MessageSend, await request.body())
    event_id = await messages.send_message(
        svc,
        actor,
        room,
        txn_id=body.txn_id,
        body=body.body,
        msgtype=body.msgtype,
        reply_to=body.reply_to,
        edit_of=body.edit_of,
        extra=dict(body.model_extra or {}),
    )
    return JSONBytesResponse({"event_id": event_id})


@router.post("/rooms/{room}/events/{event_type}", tags=["messages"], summary="Send any non-state event")
async def send_event(
    room: str, event_type: str, body: EventSend, svc: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    return {"event_id": await messages.send_event(svc, actor, room, event_type, body.content, body.txn_id)}


@router.get("/rooms/{room}/events/{event_id}", tags=["messages"], summary="One event")
async def get_event(room: str, event_id: str, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await history.event(svc, actor, room, event_id)


@router.post("/rooms/{room}/reactions", tags=["messages"], summary="React to an event")
async def react(room: str, body: ReactionSend, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return {
        "event_id": await messages.react(
            svc, actor, room, txn_id=body.txn_id, event_id=body.event_id, key=body.key
        )
    }


@router.post("/rooms/{room}/redactions", tags=["messages"], summary="Redact an event")
async def redact(room: str, body: RedactionSend, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return {
        "event_id": await messages.redact(
            svc, actor, room, body.event_id, txn_id=body.txn_id, reason=body.reason
        )
    }


@router.post("/dms", tags=["rooms"], summary="Open (or find) the DM with another agent")
async def open_dm(body: DMOpen, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    room_id, created = await dms.open_dm(svc, actor, body.user_id)
    return {"room_id": room_id, "created": created}


@router.get("/directory/{alias}", tags=["directory"], summary="Resolve an alias")
async def resolve_alias(alias: str, svc: ServicesDep) -> dict[str, Any]:
    return await directory.resolve_alias(svc, alias)


@router.put("/directory/{alias}", tags=["directory"], summary="Point an alias at a room")
async def put_alias(alias: str, body: AliasSet, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    await directory.create_alias(svc, actor, alias, body.room_id)
    return {}


@router.delete("/directory/{alias}", tags=["directory"], summary="Delete an alias")
async def delete_alias(alias: str, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    await directory.delete_alias(svc, actor, alias)
    return {}
