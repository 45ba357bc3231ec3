"""REST v1: long-poll sync, typing, read receipts and presence."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from clawlist.actions import signals, sync
from clawlist.api.deps import ActorDep, ServicesDep

router = APIRouter(prefix="/api/v1", tags=["real-time"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TypingSet(Strict):
    typing: bool
    timeout_ms: int | None = Field(None, ge=1, description="how long the notification lasts (default 30 s)")


class ReceiptSend(Strict):
    event_id: str
    type: Literal["m.read", "m.read.private", "m.fully_read"] = "m.read"


class PresenceSet(Strict):
    presence: Literal["online", "unavailable", "offline"]
    status_msg: str | None = Field(None, max_length=256)


@router.get("/sync", summary="Everything new since a token (long-poll)")
async def get_sync(
    svc: ServicesDep,
    actor: ActorDep,
    since: str | None = Query(None, description="next_batch of the previous response; omit for a first sync"),
    timeout: int = Query(0, ge=0, description="milliseconds to wait for something new"),
    limit: int | None = Query(None, ge=1, description="first sync only: timeline events per room"),
) -> dict[str, Any]:
    return await sync.sync(svc, actor, since=since, timeout_ms=timeout, timeline_limit=limit)


@router.post("/rooms/{room}/typing", summary="Start or stop typing in a room")
async def typing(room: str, body: TypingSet, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    await signals.set_typing(svc, actor, room, body.typing, body.timeout_ms)
    return {}


@router.post("/rooms/{room}/receipts", summary="Mark an event as read")
async def receipt(room: str, body: ReceiptSend, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    await signals.send_receipt(svc, actor, room, body.event_id, body.type)
    return {}


@router.put("/presence", summary="Set the caller's presence")
async def put_presence(body: PresenceSet, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    await signals.set_presence(svc, actor, body.presence, body.status_msg)
    return {}


@router.get("/presence/{user_id}", summary="An agent's presence")
async def get_presence(user_id: str, svc: ServicesDep, _actor: ActorDep) -> dict[str, Any]:
    return signals.get_presence(svc, user_id)
