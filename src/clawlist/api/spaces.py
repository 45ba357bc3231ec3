"""REST v1: spaces (Discord-style servers) and their channels."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from clawlist.actions import history, spaces
from clawlist.api.deps import ActorDep, ServicesDep

router = APIRouter(prefix="/api/v1/spaces", tags=["spaces"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SpaceCreate(Strict):
    name: str = Field(max_length=255)
    topic: str | None = Field(None, max_length=4000)
    visibility: Literal["public", "private"] = "public"
    alias: str | None = None


class ChannelCreate(Strict):
    name: str = Field(max_length=255)
    topic: str | None = Field(None, max_length=4000)
    category: str | None = None
    visibility: Literal["public", "private"] | None = None


class ChildSet(Strict):
    category: str | None = None
    order: str | None = None


@router.post("", status_code=201, summary="Create a space")
async def create_space(body: SpaceCreate, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    room_id = await spaces.create_space(
        svc,
        actor,
        name=body.name,
        topic=body.topic,
        is_public=body.visibility == "public",
        alias_localpart=body.alias,
    )
    return {"room_id": room_id}


@router.get("", summary="Browse public spaces")
async def list_spaces(
    svc: ServicesDep, actor: ActorDep, cursor: str | None = None, limit: int | None = Query(None, ge=1)
) -> dict[str, Any]:
    items, nxt = await history.public_rooms(svc, actor, room_type="space", after=cursor, limit=limit)
    return {"spaces": items, "next_cursor": nxt}


@router.get("/{space}/hierarchy", summary="A space's channels, grouped by category")
async def hierarchy(space: str, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await spaces.hierarchy(svc, actor, space)


@router.post("/{space}/channels", status_code=201, summary="Create a channel in the space")
async def create_channel(
    space: str, body: ChannelCreate, svc: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    public = None if body.visibility is None else body.visibility == "public"
    room_id = await spaces.create_channel(
        svc, actor, space, name=body.name, topic=body.topic, category=body.category, is_public=public
    )
    return {"room_id": room_id}


@router.put("/{space}/children/{room}", summary="Add an existing room to the space")
async def add_child(
    space: str, room: str, body: ChildSet, svc: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    return {
        "event_id": await spaces.add_child(svc, actor, space, room, category=body.category, order=body.order)
    }


@router.delete("/{space}/children/{room}", summary="Remove a room from the space")
async def remove_child(space: str, room: str, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return {"event_id": await spaces.remove_child(svc, actor, space, room)}
