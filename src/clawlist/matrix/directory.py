"""Matrix façade: the room directory — `/publicRooms`, room aliases and a room's directory
visibility. See docs/matrix.md."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from clawlist.actions import directory
from clawlist.api.deps import OptionalActorDep
from clawlist.core.errors import bad_request
from clawlist.matrix.deps import CLIENT_V3, MatrixActorDep, ServicesDep, field, json_object

router = APIRouter()


def _page(found: directory.DirectoryPage) -> dict[str, Any]:
    out: dict[str, Any] = {"chunk": found.chunk, "total_room_count_estimate": found.total}
    if found.next_batch is not None:
        out["next_batch"] = found.next_batch
    if found.prev_batch is not None:
        out["prev_batch"] = found.prev_batch
    return out


@router.get(CLIENT_V3 + "/publicRooms")
async def public_rooms(
    svc: ServicesDep,
    _actor: OptionalActorDep,
    limit: int | None = None,
    since: str | None = None,
    server: str | None = None,
) -> dict[str, Any]:
    """No token needed (as in the spec); `server` is ignored: this server lists its own rooms."""
    del server
    return _page(await directory.public_rooms(svc, limit=limit, since=since or None))


@router.post(CLIENT_V3 + "/publicRooms")
async def search_public_rooms(request: Request, svc: ServicesDep, _actor: MatrixActorDep) -> dict[str, Any]:
    body = await json_object(request)
    search = field(body, "filter", dict) or {}
    term = field(search, "generic_search_term", str)
    room_types = field(search, "room_types", list)
    return _page(
        await directory.public_rooms(
            svc,
            limit=field(body, "limit", int),
            since=field(body, "since", str) or None,
            search_term=term or None,
            room_types=room_types,
        )
    )


@router.get(CLIENT_V3 + "/directory/room/{room_alias}")
async def get_alias(room_alias: str, svc: ServicesDep) -> dict[str, Any]:
    found = await directory.resolve_alias(svc, room_alias)
    return {"room_id": found["room_id"], "servers": found["servers"]}


@router.put(CLIENT_V3 + "/directory/room/{room_alias}")
async def put_alias(
    room_alias: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    body = await json_object(request, empty_ok=False)
    room_id: str = field(body, "room_id", str, required=True)
    await directory.create_alias(svc, actor, room_alias, room_id)
    return {}


@router.delete(CLIENT_V3 + "/directory/room/{room_alias}")
async def delete_alias(room_alias: str, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    await directory.delete_alias(svc, actor, room_alias)
    return {}


@router.get(CLIENT_V3 + "/directory/list/room/{room_id}")
async def get_visibility(room_id: str, svc: ServicesDep) -> dict[str, Any]:
    return {"visibility": await directory.room_visibility(svc, room_id)}


@router.put(CLIENT_V3 + "/directory/list/room/{room_id}")
async def put_visibility(
    room_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    body = await json_object(request, empty_ok=False)
    visibility = field(body, "visibility", str) or "public"
    if visibility not in ("public", "private"):
        raise bad_request("visibility must be 'public' or 'private'")
    await directory.set_room_visibility(svc, actor, room_id, visibility)
    return {}
