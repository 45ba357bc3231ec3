"""Matrix façade: filters and `/sync`.

`GET /sync` reads its query parameters by hand: unknown ones (`_cacheBuster`, ...) are ignored and
a malformed known one is `400 M_INVALID_PARAM`, not a validation error. The response is rendered
with orjson, which writes the feed's pre-rendered event JSON (`orjson.Fragment`) as it is.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from clawlist.actions import filters, matrix_sync
from clawlist.api.responses import JSONBytesResponse
from clawlist.core.errors import bad_request
from clawlist.matrix.deps import CLIENT_V3, MatrixActorDep, ServicesDep, json_object

router = APIRouter()

#: `r0` is the pre-v1.1 prefix some older bot libraries still use; the behaviour is the same.
PREFIXES = (CLIENT_V3, "/_matrix/client/r0")
_TRUE = ("true", "1")
_FALSE = ("false", "0")


def _boolean(value: str | None, name: str) -> bool:
    if value is None:
        return False
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise bad_request(f"{name} must be true or false")


def _timeout(value: str | None) -> int:
    if value is None or value == "":
        return 0
    try:
        timeout = int(value)
    except ValueError:
        raise bad_request("timeout must be a whole number of milliseconds") from None
    return max(timeout, 0)


async def create_filter(
    user_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    body = await json_object(request, empty_ok=False)
    return {"filter_id": await filters.create(svc, actor, user_id, body)}


async def get_filter(user_id: str, filter_id: str, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    return await filters.get(svc, actor, user_id, filter_id)


async def sync(request: Request, svc: ServicesDep, actor: MatrixActorDep) -> JSONBytesResponse:
    query = request.query_params
    body = await matrix_sync.sync(
        svc,
        actor,
        since=query.get("since") or None,
        timeout_ms=_timeout(query.get("timeout")),
        full_state=_boolean(query.get("full_state"), "full_state"),
        set_presence_to=query.get("set_presence") or "online",
        filter_ref=query.get("filter"),
    )
    return JSONBytesResponse(body)


for _prefix in PREFIXES:
    router.add_api_route(f"{_prefix}/sync", sync, methods=["GET"])
    router.add_api_route(f"{_prefix}/user/{{user_id}}/filter", create_filter, methods=["POST"])
    router.add_api_route(f"{_prefix}/user/{{user_id}}/filter/{{filter_id}}", get_filter, methods=["GET"])
