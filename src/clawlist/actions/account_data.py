"""Account data: per-user JSON objects by type, global or per room (Matrix `m.direct`, read markers,
client settings). Versions come from one counter, so a sync asks "what changed after N"; a change
wakes the user's long-polls through the ephemeral hub (kind `account_data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.services import Services
from clawlist.core.errors import ClawlistError, bad_request, forbidden, not_found
from clawlist.storage.counters import current_value, next_value
from clawlist.storage.tables import account_data, rooms

COUNTER = "account_data"
GLOBAL = ""  # room_id of global account data
MAX_TYPE_LENGTH = 255


@dataclass(frozen=True)
class AccountDataItem:
    room_id: str  # "" for global
    type: str
    content: dict[str, Any]
    version: int


def _check(svc: Services, actor: Actor, user_id: str, data_type: str) -> str:
    owner = require_agent(actor)
    if user_id != owner:
        raise forbidden("you can only access your own account data")
    if not isinstance(data_type, str) or not 0 < len(data_type) <= MAX_TYPE_LENGTH:
        raise bad_request(f"account data type must be 1-{MAX_TYPE_LENGTH} characters")
    return owner


async def get(
    svc: Services, actor: Actor, user_id: str, data_type: str, room_id: str = GLOBAL
) -> dict[str, Any]:
    """The content stored under `data_type`; 404 M_NOT_FOUND when there is none."""
    owner = _check(svc, actor, user_id, data_type)
    async with svc.db.read() as conn:
        content = (
            await conn.execute(
                select(account_data.c.content).where(
                    and_(
                        account_data.c.user_id == owner,
                        account_data.c.room_id == room_id,
                        account_data.c.type == data_type,
                    )
                )
            )
        ).scalar()
    if content is None:
        raise not_found(f"no account data of type {data_type}")
    result: dict[str, Any] = orjson.loads(content)
    return result


async def put(
    svc: Services,
    actor: Actor,
    user_id: str,
    data_type: str,
    content: Any,
    room_id: str = GLOBAL,
) -> int:
    """Store `content` under `data_type` (replacing it); returns the new version."""
    owner = _check(svc, actor, user_id, data_type)
    if not isinstance(content, dict):
        raise ClawlistError(400, "M_BAD_JSON", "account data content must be a JSON object")
    encoded = orjson.dumps(content)
    if len(encoded) > svc.settings.max_event_bytes:
        raise ClawlistError(
            413, "M_TOO_LARGE", f"account data is larger than {svc.settings.max_event_bytes} bytes"
        )
    now = svc.clock.now_ms()
    async with svc.db.write() as conn:
        if room_id != GLOBAL:
            exists = (await conn.execute(select(rooms.c.room_id).where(rooms.c.room_id == room_id))).first()
            if exists is None:
                raise not_found(f"unknown room {room_id}")
        version = await next_value(conn, COUNTER)
        values = {
            "user_id": owner,
            "room_id": room_id,
            "type": data_type,
            "content": encoded.decode(),
            "version": version,
            "updated_ts": now,
        }
        insert = sqlite_insert(account_data) if svc.db.is_sqlite else pg_insert(account_data)
        await conn.execute(
            insert.values(**values).on_conflict_do_update(
                index_elements=["user_id", "room_id", "type"],
                set_={"content": values["content"], "version": version, "updated_ts": now},
            )
        )
    await svc.ephemeral.publish("account_data", room_id or None, owner, {"type": data_type})
    return version


async def changed_since(svc: Services, user_id: str, version: int) -> list[AccountDataItem]:
    """Everything of `user_id` changed after `version` (all of it for version 0), oldest first."""
    async with svc.db.read() as conn:
        rows = (
            await conn.execute(
                select(account_data)
                .where(and_(account_data.c.user_id == user_id, account_data.c.version > version))
                .order_by(account_data.c.version)
            )
        ).all()
    return [AccountDataItem(r.room_id, r.type, orjson.loads(r.content), int(r.version)) for r in rows]


async def latest_version(svc: Services) -> int:
    """The counter's current value: a sync token taken now covers every version up to it."""
    async with svc.db.read() as conn:
        return await current_value(conn, COUNTER)
