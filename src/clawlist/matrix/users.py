"""Matrix façade: profiles, presence, account data and the user directory."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from clawlist.actions import account_data, profile, signals, user_directory, users
from clawlist.api.deps import OptionalActorDep
from clawlist.core import ids
from clawlist.core.errors import ClawlistError, bad_request
from clawlist.matrix.deps import CLIENT_V3, MatrixActorDep, ServicesDep, field, json_object

router = APIRouter()


def _user_id(user_id: str) -> str:
    """A path's user id must be a full `@local:server`."""
    ids.split_id(user_id, "@", "user_id")
    return user_id


def _room_id(room_id: str) -> str:
    ids.split_id(room_id, "!", "room_id")
    return room_id


# -- profiles --------------------------------------------------------------------------------------
# Readable without a token (as the spec allows); a token, when sent, must be valid.


@router.get(f"{CLIENT_V3}/profile/{{user_id}}")
async def get_profile(user_id: str, svc: ServicesDep, _actor: OptionalActorDep) -> dict[str, Any]:
    return await profile.get_profile(svc, _user_id(user_id))


@router.get(f"{CLIENT_V3}/profile/{{user_id}}/displayname")
async def get_displayname(user_id: str, svc: ServicesDep, _actor: OptionalActorDep) -> dict[str, Any]:
    found = await profile.get_profile(svc, _user_id(user_id))
    return {k: v for k, v in found.items() if k == "displayname"}


@router.get(f"{CLIENT_V3}/profile/{{user_id}}/avatar_url")
async def get_avatar_url(user_id: str, svc: ServicesDep, _actor: OptionalActorDep) -> dict[str, Any]:
    found = await profile.get_profile(svc, _user_id(user_id))
    return {k: v for k, v in found.items() if k == "avatar_url"}


@router.put(f"{CLIENT_V3}/profile/{{user_id}}/displayname")
async def set_displayname(
    user_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    body = await json_object(request, empty_ok=False)
    if "displayname" not in body:
        raise ClawlistError(400, "M_MISSING_PARAM", "missing 'displayname'")
    await profile.set_displayname(svc, actor, _user_id(user_id), body["displayname"])
    return {}


@router.put(f"{CLIENT_V3}/profile/{{user_id}}/avatar_url")
async def set_avatar_url(
    user_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    body = await json_object(request, empty_ok=False)
    if "avatar_url" not in body:
        raise ClawlistError(400, "M_MISSING_PARAM", "missing 'avatar_url'")
    await profile.set_avatar_url(svc, actor, _user_id(user_id), body["avatar_url"])
    return {}


# -- presence --------------------------------------------------------------------------------------


@router.get(f"{CLIENT_V3}/presence/{{user_id}}/status")
async def get_presence(user_id: str, svc: ServicesDep, _actor: MatrixActorDep) -> dict[str, Any]:
    agent = await users.find_agent(svc, _user_id(user_id))
    return signals.get_presence(svc, agent.user_id)


@router.put(f"{CLIENT_V3}/presence/{{user_id}}/status")
async def set_presence(
    user_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    body = await json_object(request, empty_ok=False)
    if _user_id(user_id) != actor.principal_id:
        await users.find_agent(svc, user_id)  # 404 for nobody
        raise ClawlistError(403, "M_FORBIDDEN", "you can only set your own presence")
    state = field(body, "presence", str, required=True)
    await signals.set_presence(svc, actor, state, field(body, "status_msg", str))
    return {}


# -- account data ----------------------------------------------------------------------------------


@router.get(f"{CLIENT_V3}/user/{{user_id}}/account_data/{{data_type}}")
async def get_account_data(
    user_id: str, data_type: str, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    return await account_data.get(svc, actor, _user_id(user_id), data_type)


@router.put(f"{CLIENT_V3}/user/{{user_id}}/account_data/{{data_type}}")
async def put_account_data(
    user_id: str, data_type: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    content = await json_object(request, empty_ok=False)
    await account_data.put(svc, actor, _user_id(user_id), data_type, content)
    return {}


@router.get(f"{CLIENT_V3}/user/{{user_id}}/rooms/{{room_id}}/account_data/{{data_type}}")
async def get_room_account_data(
    user_id: str, room_id: str, data_type: str, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    return await account_data.get(svc, actor, _user_id(user_id), data_type, _room_id(room_id))


@router.put(f"{CLIENT_V3}/user/{{user_id}}/rooms/{{room_id}}/account_data/{{data_type}}")
async def put_room_account_data(
    user_id: str, room_id: str, data_type: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    content = await json_object(request, empty_ok=False)
    await account_data.put(svc, actor, _user_id(user_id), data_type, content, _room_id(room_id))
    return {}


# -- user directory --------------------------------------------------------------------------------


@router.post(f"{CLIENT_V3}/user_directory/search")
async def search_users(request: Request, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    body = await json_object(request, empty_ok=False)
    term = field(body, "search_term", str, required=True)
    limit = field(body, "limit", int)
    if limit is not None and limit < 1:
        raise bad_request("limit must be a positive integer")
    page = await user_directory.search(svc, actor, term, limit)
    return {"results": page.results, "limited": page.limited}
