"""Matrix façade: the timeline — sending, redacting, typing, receipts, read markers, reading events,
`/messages`, `/context`, `/relations` and reports. See docs/matrix.md."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Query, Request

from clawlist.actions import event_context, history, messages, reports, signals
from clawlist.actions.actor import Actor
from clawlist.api.deps import get_actor, get_services
from clawlist.api.responses import JSONBytesResponse
from clawlist.core.errors import ClawlistError, bad_request, forbidden
from clawlist.core.filters import EventFilter, parse_event_filter
from clawlist.matrix.deps import (
    CLIENT_V1,
    CLIENT_V3,
    MatrixActorDep,
    ServicesDep,
    field,
    get_matrix_actor,
    json_object,
)

router = APIRouter()

#: `/messages` page size when the client gives none (the spec's default).
DEFAULT_MESSAGES_LIMIT = 10


def client_event(event: dict[str, Any]) -> dict[str, Any]:
    """A Matrix client event: our native `position` field left out."""
    event.pop("position", None)
    return event


def client_events(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [client_event(e) for e in found]


async def _actor(request: Request) -> tuple[Any, Actor]:
    """Services and the agent, without FastAPI's dependency machinery (the hot paths)."""
    svc = await get_services(request)
    actor = await get_matrix_actor(await get_actor(request, svc))
    return svc, actor


@router.put(CLIENT_V3 + "/rooms/{room_id}/send/{event_type}/{txn_id}")
async def send(room_id: str, event_type: str, txn_id: str, request: Request) -> JSONBytesResponse:
    """Send a timeline event; a retransmission (same session and txn id) gets the first answer."""
    svc, actor = await _actor(request)
    content = await json_object(request)
    event_id = await messages.send_event(svc, actor, room_id, event_type, content, txn_id)
    return JSONBytesResponse({"event_id": event_id})


@router.put(CLIENT_V3 + "/rooms/{room_id}/redact/{event_id}/{txn_id}")
async def redact(
    room_id: str, event_id: str, txn_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    body = await json_object(request)
    reason = field(body, "reason", str)
    redaction_id = await messages.redact(svc, actor, room_id, event_id, txn_id=txn_id, reason=reason)
    return {"event_id": redaction_id}


@router.put(CLIENT_V3 + "/rooms/{room_id}/typing/{user_id}")
async def typing(
    room_id: str, user_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    if user_id != actor.principal_id:
        raise forbidden("you can only set your own typing notification")
    body = await json_object(request, empty_ok=False)
    is_typing = field(body, "typing", bool, required=True)
    timeout = field(body, "timeout", int)
    if timeout is not None:
        if timeout < 0:
            raise bad_request("timeout must be a non-negative number of milliseconds")
        # Clients ask for long timeouts; the longest this server keeps is a setting, not an error.
        timeout = min(max(timeout, 1), svc.settings.typing_max_timeout_ms)
    await signals.set_typing(svc, actor, room_id, is_typing, timeout if is_typing else None)
    return {}


@router.post(CLIENT_V3 + "/rooms/{room_id}/receipt/{receipt_type}/{event_id}")
async def receipt(
    room_id: str,
    receipt_type: str,
    event_id: str,
    request: Request,
    svc: ServicesDep,
    actor: MatrixActorDep,
) -> dict[str, Any]:
    body = await json_object(request)
    thread_id = field(body, "thread_id", str)
    if receipt_type not in signals.RECEIPT_TYPES:
        raise bad_request(f"receipt type must be one of {', '.join(signals.RECEIPT_TYPES)}")
    await signals.send_receipt(svc, actor, room_id, event_id, receipt_type, thread_id=thread_id)
    return {}


@router.post(CLIENT_V3 + "/rooms/{room_id}/read_markers")
async def read_markers(
    room_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    body = await json_object(request)
    await signals.set_read_markers(
        svc,
        actor,
        room_id,
        fully_read=field(body, "m.fully_read", str),
        read=field(body, "m.read", str),
        read_private=field(body, "m.read.private", str),
    )
    return {}


@router.get(CLIENT_V3 + "/rooms/{room_id}/event/{event_id}")
async def get_event(room_id: str, event_id: str, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    return client_event(await history.event(svc, actor, room_id, event_id))


def parse_filter_param(raw: str | None) -> EventFilter:
    """The `filter` query parameter of /messages and /context: a JSON `RoomEventFilter`."""
    if raw is None or not raw.strip():
        return EventFilter()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ClawlistError(400, "M_NOT_JSON", "filter is not valid JSON") from None
    return parse_event_filter(value, "filter", room_event=True)


def _page_limit(limit: int | None, event_filter: EventFilter, default: int) -> int:
    if limit is not None and limit < 1:
        raise ClawlistError(400, "M_INVALID_PARAM", "limit must be a positive integer")
    wanted = [n for n in (limit, event_filter.limit) if n]
    return min(wanted) if wanted else default


@router.get(CLIENT_V3 + "/rooms/{room_id}/messages")
async def get_messages(
    room_id: str,
    svc: ServicesDep,
    actor: MatrixActorDep,
    from_: str | None = Query(None, alias="from"),
    to: str | None = None,
    dir: str = "b",
    limit: int | None = None,
    filter: str | None = None,
) -> dict[str, Any]:
    """A page of the timeline. `dir` defaults to `b`; `from` may be omitted (v1.11), a token from
    an earlier page or a sync's `prev_batch`/`next_batch`."""
    event_filter = parse_filter_param(filter)
    page = await history.messages(
        svc,
        actor,
        room_id,
        from_token=from_ or None,
        to_token=to or None,
        direction=dir,
        limit=_page_limit(limit, event_filter, DEFAULT_MESSAGES_LIMIT),
        event_filter=event_filter,
    )
    out: dict[str, Any] = {"chunk": client_events(page.chunk), "start": page.start}
    if page.end is not None:
        out["end"] = page.end
    if event_filter.lazy_load_members:
        out["state"] = client_events(page.state)
    return out


@router.get(CLIENT_V3 + "/rooms/{room_id}/context/{event_id}")
async def get_context(
    room_id: str,
    event_id: str,
    svc: ServicesDep,
    actor: MatrixActorDep,
    limit: int | None = None,
    filter: str | None = None,
) -> dict[str, Any]:
    event_filter = parse_filter_param(filter)
    if limit is not None and limit < 0:
        raise ClawlistError(400, "M_INVALID_PARAM", "limit must be a non-negative integer")
    found = await event_context.context(
        svc,
        actor,
        room_id,
        event_id,
        limit=limit if limit is not None else event_filter.limit,
        event_filter=event_filter,
    )
    for key in ("events_before", "events_after", "state"):
        found[key] = client_events(found[key])
    found["event"] = client_event(found["event"])
    return found


async def _relations(
    svc: Any,
    actor: Actor,
    room_id: str,
    event_id: str,
    rel_type: str | None,
    event_type: str | None,
    from_: str | None,
    to: str | None,
    dir: str,
    limit: int | None,
) -> dict[str, Any]:
    if limit is not None and limit < 1:
        raise ClawlistError(400, "M_INVALID_PARAM", "limit must be a positive integer")
    found = await event_context.relations(
        svc,
        actor,
        room_id,
        event_id,
        rel_type=rel_type,
        event_type=event_type,
        from_token=from_ or None,
        to_token=to or None,
        direction=dir,
        limit=limit or DEFAULT_MESSAGES_LIMIT,
    )
    found["chunk"] = client_events(found["chunk"])
    return found


@router.get(CLIENT_V1 + "/rooms/{room_id}/relations/{event_id}")
async def relations_all(
    room_id: str,
    event_id: str,
    svc: ServicesDep,
    actor: MatrixActorDep,
    from_: str | None = Query(None, alias="from"),
    to: str | None = None,
    dir: str = "b",
    limit: int | None = None,
) -> dict[str, Any]:
    return await _relations(svc, actor, room_id, event_id, None, None, from_, to, dir, limit)


@router.get(CLIENT_V1 + "/rooms/{room_id}/relations/{event_id}/{rel_type}")
async def relations_of_type(
    room_id: str,
    event_id: str,
    rel_type: str,
    svc: ServicesDep,
    actor: MatrixActorDep,
    from_: str | None = Query(None, alias="from"),
    to: str | None = None,
    dir: str = "b",
    limit: int | None = None,
) -> dict[str, Any]:
    return await _relations(svc, actor, room_id, event_id, rel_type, None, from_, to, dir, limit)


@router.get(CLIENT_V1 + "/rooms/{room_id}/relations/{event_id}/{rel_type}/{event_type}")
async def relations_of_type_and_event_type(
    room_id: str,
    event_id: str,
    rel_type: str,
    event_type: str,
    svc: ServicesDep,
    actor: MatrixActorDep,
    from_: str | None = Query(None, alias="from"),
    to: str | None = None,
    dir: str = "b",
    limit: int | None = None,
) -> dict[str, Any]:
    return await _relations(svc, actor, room_id, event_id, rel_type, event_type, from_, to, dir, limit)


@router.post(CLIENT_V3 + "/rooms/{room_id}/report/{event_id}")
async def report(
    room_id: str, event_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    body = await json_object(request)
    await reports.report_event(
        svc,
        actor,
        room_id,
        event_id,
        reason=field(body, "reason", str),
        score=field(body, "score", int),
    )
    return {}
