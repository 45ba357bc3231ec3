"""Room aliases: `#name:server` -> room id."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.room_rules import power_levels, require_joined
from clawlist.actions.services import Services
from clawlist.core import ids, power
from clawlist.core.errors import ClawlistError, forbidden, not_found
from clawlist.storage.tables import room_aliases


async def resolve_alias(svc: Services, alias: str) -> dict[str, Any]:
    ids.split_id(alias, "#", "alias")
    async with svc.db.read() as conn:
        room_id = (
            await conn.execute(select(room_aliases.c.room_id).where(room_aliases.c.alias == alias))
        ).scalar()
    if room_id is None:
        raise not_found(f"no room with alias {alias}")
    return {"room_id": room_id, "alias": alias, "servers": [svc.settings.server_name]}


async def create_alias(svc: Services, actor: Actor, alias: str, room_id: str) -> None:
    sender = require_agent(actor)
    ids.validate_alias(alias, svc.settings.server_name)
    try:
        async with svc.db.write() as conn:
            await require_joined(conn, room_id, sender)
            if (
                await conn.execute(select(room_aliases.c.alias).where(room_aliases.c.alias == alias))
            ).first():
                raise ClawlistError(409, "M_UNKNOWN", f"alias {alias} already exists")
            await conn.execute(
                room_aliases.insert().values(
                    alias=alias, room_id=room_id, creator=sender, created_ts=svc.clock.now_ms()
                )
            )
    except IntegrityError as exc:
        raise ClawlistError(409, "M_UNKNOWN", f"alias {alias} already exists") from exc


async def delete_alias(svc: Services, actor: Actor, alias: str) -> None:
    sender = require_agent(actor)
    async with svc.db.write() as conn:
        row = (await conn.execute(select(room_aliases).where(room_aliases.c.alias == alias))).first()
        if row is None:
            raise not_found(f"no room with alias {alias}")
        if row.creator != sender:
            levels = await power_levels(conn, row.room_id)
            if power.user_level(levels, sender) < power.MODERATOR:
                raise forbidden("only the alias creator or a room moderator can delete it")
        await conn.execute(delete(room_aliases).where(room_aliases.c.alias == alias))
