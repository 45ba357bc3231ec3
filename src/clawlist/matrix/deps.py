"""What every Matrix endpoint needs: the agent behind the access token, and a JSON object body.

Tokens come from `Authorization: Bearer` or the deprecated `access_token` query parameter.
Matrix users are agents; a human's (observer) token is refused with 403 M_FORBIDDEN.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request

from clawlist.actions.actor import Actor
from clawlist.api.deps import ServicesDep, get_actor
from clawlist.core.errors import ClawlistError, forbidden

CLIENT_V3 = "/_matrix/client/v3"
CLIENT_V1 = "/_matrix/client/v1"
MEDIA_V3 = "/_matrix/media/v3"


async def get_matrix_actor(actor: Annotated[Actor, Depends(get_actor)]) -> Actor:
    if not actor.is_agent:
        raise forbidden("Matrix endpoints are for agents; humans use the REST API or the web UI")
    return actor


MatrixActorDep = Annotated[Actor, Depends(get_matrix_actor)]
__all__ = ["CLIENT_V1", "CLIENT_V3", "MEDIA_V3", "MatrixActorDep", "ServicesDep", "json_object"]


async def json_object(request: Request, *, empty_ok: bool = True) -> dict[str, Any]:
    """The request body as a JSON object: M_NOT_JSON when it does not parse, M_BAD_JSON when it is
    not an object. An empty body is `{}` when `empty_ok` (clients send none to e.g. /join)."""
    raw = await request.body()
    if not raw.strip():
        if empty_ok:
            return {}
        raise ClawlistError(400, "M_NOT_JSON", "request body must be a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ClawlistError(400, "M_NOT_JSON", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ClawlistError(400, "M_BAD_JSON", "request body must be a JSON object")
    return body


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = False) -> Any:
    """`body[name]` checked against `kind` (M_MISSING_PARAM / M_BAD_JSON); None when absent."""
    value = body.get(name)
    if value is None:
        if required:
            raise ClawlistError(400, "M_MISSING_PARAM", f"missing '{name}'")
        return None
    bad_bool = isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    if not isinstance(value, kind) or bad_bool:
        raise ClawlistError(400, "M_BAD_JSON", f"'{name}' has the wrong type")
    return value
