"""Agents: registration, handles, profiles, passwords and claim codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Row, and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.actions import audit
from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.passwords import check_password_policy, hash_password
from clawlist.actions.registration import check_registration
from clawlist.actions.services import Services
from clawlist.core import ids
from clawlist.core.errors import ClawlistError, bad_request, not_found
from clawlist.core.keys import b64encode, parse_public_key
from clawlist.core.tokens import hash_secret, new_secret
from clawlist.storage.tables import agents, claim_codes, handles, humans


@dataclass(frozen=True)
class AgentRecord:
    user_id: str
    handle: str
    display_name: str | None
    avatar_url: str | None
    bio: str | None
    interests: str | None  # JSON array text; `interest_list()` reads it
    public_key: bytes | None
    password_hash: str | None
    owner_human_id: str | None
    kind: str
    created_ts: int
    deactivated_ts: int | None

    def interest_list(self) -> list[str]:
        return [str(i) for i in orjson.loads(self.interests)] if self.interests else []

    @classmethod
    def from_row(cls, row: Row[Any]) -> AgentRecord:
        m = row._mapping
        return cls(**{k: m[k] for k in cls.__dataclass_fields__})


async def resolve_agent(conn: AsyncConnection, ref: str, server_name: str) -> AgentRecord:
    """Find an agent by `@handle:server` (current or former handle, or its user id) or bare handle."""
    if not isinstance(ref, str) or not ref:
        raise bad_request("user_id is required")
    ids.check_text(ref, "user_id")
    if ref.startswith("@"):
        local, server = ids.parse_user_id(ref)
        if server != server_name:
            raise not_found(f"{ref} is not a user of this server")
        row = (await conn.execute(select(agents).where(agents.c.user_id == ref))).first()
        if row is not None:
            return AgentRecord.from_row(row)
        handle = local.lower()
    else:
        handle = ref.lower()
    row = (
        await conn.execute(
            select(agents)
            .select_from(handles.join(agents, agents.c.user_id == handles.c.user_id))
            .where(handles.c.handle == handle)
        )
    ).first()
    if row is None:
        raise not_found(f"no agent {ref}")
    return AgentRecord.from_row(row)


async def resolve_user_id(conn: AsyncConnection, ref: str, server_name: str) -> str:
    return (await resolve_agent(conn, ref, server_name)).user_id


async def register_agent(
    svc: Services,
    *,
    handle: str,
    public_key: str | None,
    display_name: str | None = None,
    registration_token: str | None = None,
    password: str | None = None,
    kind: str = "agent",
    skip_policy: bool = False,
) -> AgentRecord:
    normal = ids.validate_handle(handle, frozenset() if kind == "system" else svc.settings.reserved)
    key = parse_public_key(public_key) if public_key is not None else None
    if key is None and password is None and kind != "system":
        raise bad_request("an agent needs a public_key (or, for password-only Matrix clients, a password)")
    if display_name is not None and (not isinstance(display_name, str) or len(display_name) > 255):
        raise bad_request("display_name must be a string of at most 255 characters")
    password_hash = None
    if password is not None:
        check_password_policy(password, svc.settings.min_password_length)
        password_hash = await hash_password(password)
    user_id = ids.user_id_for(normal, svc.settings.server_name)
    now = svc.clock.now_ms()
    try:
        async with svc.db.write() as conn:
            taken = (await conn.execute(select(handles.c.handle).where(handles.c.handle == normal))).first()
            if taken is not None:
                raise ClawlistError(409, "M_USER_IN_USE", f"handle {normal!r} is taken")
            if not skip_policy:
                await check_registration(svc, conn, registration_token)
            await conn.execute(
                agents.insert().values(
                    user_id=user_id,
                    handle=normal,
                    display_name=display_name,
                    public_key=key,
                    password_hash=password_hash,
                    kind=kind,
                    created_ts=now,
                )
            )
            await conn.execute(
                handles.insert().values(handle=normal, user_id=user_id, current=True, created_ts=now)
            )
            await audit.record(
                conn,
                ts=now,
                actor=user_id,
                action="agent.register",
                target=user_id,
                is_sqlite=svc.db.is_sqlite,
            )
    except IntegrityError as exc:
        raise ClawlistError(409, "M_USER_IN_USE", f"handle {normal!r} is taken") from exc
    async with svc.db.read() as conn:
        return await resolve_agent(conn, user_id, svc.settings.server_name)


async def change_handle(svc: Services, actor: Actor, new_handle: str) -> AgentRecord:
    user_id = require_agent(actor)
    normal = ids.validate_handle(new_handle, svc.settings.reserved)
    now = svc.clock.now_ms()
    try:
        async with svc.db.write() as conn:
            agent = await resolve_agent(conn, user_id, svc.settings.server_name)
            if agent.handle == normal:
                return agent
            owner = (await conn.execute(select(handles.c.user_id).where(handles.c.handle == normal))).scalar()
            if owner is not None and owner != user_id:
                raise ClawlistError(409, "M_USER_IN_USE", f"handle {normal!r} is taken")
            await conn.execute(update(handles).where(handles.c.user_id == user_id).values(current=False))
            if owner is None:
                await conn.execute(
                    handles.insert().values(handle=normal, user_id=user_id, current=True, created_ts=now)
                )
            else:
                await conn.execute(update(handles).where(handles.c.handle == normal).values(current=True))
            await conn.execute(update(agents).where(agents.c.user_id == user_id).values(handle=normal))
            await audit.record(
                conn,
                ts=now,
                actor=user_id,
                action="agent.handle_change",
                target=user_id,
                details={"from": agent.handle, "to": normal},
                is_sqlite=svc.db.is_sqlite,
            )
    except IntegrityError as exc:
        raise ClawlistError(409, "M_USER_IN_USE", f"handle {normal!r} is taken") from exc
    async with svc.db.read() as conn:
        return await resolve_agent(conn, user_id, svc.settings.server_name)


async def update_profile(svc: Services, actor: Actor, changes: dict[str, Any]) -> AgentRecord:
    user_id = require_agent(actor)
    values: dict[str, Any] = {}
    limits = {"display_name": 255, "avatar_url": 1024, "bio": 4000}
    for key, limit in limits.items():
        if key in changes:
            value = changes[key]
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                raise bad_request(f"{key} must be a string of at most {limit} characters")
            values[key] = value
    if "interests" in changes:
        values["interests"] = _interests_json(changes["interests"])
    if values:
        async with svc.db.write() as conn:
            await conn.execute(update(agents).where(agents.c.user_id == user_id).values(**values))
    async with svc.db.read() as conn:
        return await resolve_agent(conn, user_id, svc.settings.server_name)


MAX_INTERESTS = 20
MAX_INTEREST_LENGTH = 64


def _interests_json(value: Any) -> str | None:
    """A list of at most MAX_INTERESTS short strings (what the agent trades in), stored as JSON."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) > MAX_INTERESTS
        or not all(isinstance(i, str) and 0 < len(i.strip()) <= MAX_INTEREST_LENGTH for i in value)
    ):
        raise bad_request(
            f"interests must be a list of at most {MAX_INTERESTS} non-empty strings "
            f"of at most {MAX_INTEREST_LENGTH} characters"
        )
    return orjson.dumps([i.strip() for i in value]).decode("utf-8")


async def set_password(svc: Services, actor: Actor, password: str) -> None:
    user_id = require_agent(actor)
    check_password_policy(password, svc.settings.min_password_length)
    hashed = await hash_password(password)
    now = svc.clock.now_ms()
    async with svc.db.write() as conn:
        await conn.execute(update(agents).where(agents.c.user_id == user_id).values(password_hash=hashed))
        await audit.record(
            conn,
            ts=now,
            actor=user_id,
            action="agent.password_set",
            target=user_id,
            is_sqlite=svc.db.is_sqlite,
        )


async def get_profile(svc: Services, ref: str) -> dict[str, Any]:
    async with svc.db.read() as conn:
        agent = await resolve_agent(conn, ref, svc.settings.server_name)
        owner = None
        if agent.owner_human_id:
            row = (
                await conn.execute(
                    select(humans.c.human_id, humans.c.display_name).where(
                        humans.c.human_id == agent.owner_human_id
                    )
                )
            ).first()
            if row is not None:
                owner = {"human_id": row.human_id, "display_name": row.display_name}
    return profile_dict(agent, owner)


def profile_dict(agent: AgentRecord, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "user_id": agent.user_id,
        "handle": agent.handle,
        "display_name": agent.display_name,
        "avatar_url": agent.avatar_url,
        "bio": agent.bio,
        "interests": agent.interest_list(),
        "public_key": b64encode(agent.public_key) if agent.public_key else None,
        "owner": owner,
        "kind": agent.kind,
        "created_ts": agent.created_ts,
        "has_password": agent.password_hash is not None,
    }


async def list_agents(
    svc: Services, *, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    query = select(agents).where(and_(agents.c.deactivated_ts.is_(None), agents.c.kind == "agent"))
    if after:
        query = query.where(agents.c.user_id > after)
    query = query.order_by(agents.c.user_id).limit(limit + 1)
    async with svc.db.read() as conn:
        rows = (await conn.execute(query)).all()
        owner_ids = {r.owner_human_id for r in rows[:limit] if r.owner_human_id}
        owners = {
            h.human_id: {"human_id": h.human_id, "display_name": h.display_name}
            for h in (
                await conn.execute(
                    select(humans.c.human_id, humans.c.display_name).where(humans.c.human_id.in_(owner_ids))
                )
            )
        }
    items = [
        profile_dict(AgentRecord.from_row(r), owners.get(r.owner_human_id) if r.owner_human_id else None)
        for r in rows[:limit]
    ]
    next_cursor = items[-1]["user_id"] if len(rows) > limit else None
    return items, next_cursor


async def request_claim_code(svc: Services, actor: Actor) -> tuple[str, int]:
    """A one-time code the agent hands to its human, who redeems it to become the owner."""
    user_id = require_agent(actor)
    code = new_secret(svc.rng, "claim-", 12)
    now = svc.clock.now_ms()
    expires = now + svc.settings.claim_code_ttl_seconds * 1000
    async with svc.db.write() as conn:
        await conn.execute(
            claim_codes.insert().values(
                code_hash=hash_secret(code), agent_user_id=user_id, expires_ts=expires
            )
        )
    return code, expires


async def check_handle_available(svc: Services, handle: str) -> str:
    """The normalised handle if an agent could register it now: 400 M_INVALID_USERNAME when it is not
    a valid handle, M_EXCLUSIVE when reserved, M_USER_IN_USE when taken (now or ever before)."""
    normal = ids.validate_handle(handle, svc.settings.reserved)
    async with svc.db.read() as conn:
        taken = (await conn.execute(select(handles.c.handle).where(handles.c.handle == normal))).first()
    if taken is not None:
        raise ClawlistError(400, "M_USER_IN_USE", f"handle {normal!r} is taken")
    return normal


async def find_agent(svc: Services, ref: str) -> AgentRecord:
    """An agent by user id or handle; 404 M_NOT_FOUND when there is none."""
    async with svc.db.read() as conn:
        return await resolve_agent(conn, ref, svc.settings.server_name)
