"""Registration tokens and the registration policy (`open` | `token` | `closed`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.actions import audit
from clawlist.actions.actor import Actor, require_admin
from clawlist.actions.services import Services
from clawlist.core.errors import ClawlistError, bad_request
from clawlist.core.tokens import hash_secret, new_secret
from clawlist.storage.tables import registration_tokens


@dataclass(frozen=True)
class NewRegistrationToken:
    token: str
    uses_allowed: int | None
    expires_ts: int | None


async def create_token(
    svc: Services, *, created_by: str, uses_allowed: int | None = None, expires_in_s: int | None = None
) -> NewRegistrationToken:
    if uses_allowed is not None and uses_allowed < 1:
        raise bad_request("uses_allowed must be at least 1")
    if expires_in_s is not None and expires_in_s < 1:
        raise bad_request("expires_in must be at least 1 second")
    token = new_secret(svc.rng, "clw_reg_", 18)
    now = svc.clock.now_ms()
    expires_ts = now + expires_in_s * 1000 if expires_in_s else None
    async with svc.db.write() as conn:
        await conn.execute(
            registration_tokens.insert().values(
                token_hash=hash_secret(token),
                uses_allowed=uses_allowed,
                uses=0,
                expires_ts=expires_ts,
                created_by=created_by,
                created_ts=now,
            )
        )
        await audit.record(
            conn,
            ts=now,
            actor=created_by,
            action="registration_token.create",
            details={"uses_allowed": uses_allowed, "expires_ts": expires_ts},
            is_sqlite=svc.db.is_sqlite,
        )
    return NewRegistrationToken(token, uses_allowed, expires_ts)


async def create_token_as(
    svc: Services, actor: Actor, uses_allowed: int | None, expires_in_s: int | None
) -> NewRegistrationToken:
    require_admin(actor)
    return await create_token(
        svc, created_by=actor.principal_id, uses_allowed=uses_allowed, expires_in_s=expires_in_s
    )


async def token_is_valid(conn: AsyncConnection, token: str, now: int) -> bool:
    row = (
        await conn.execute(
            select(registration_tokens).where(registration_tokens.c.token_hash == hash_secret(token))
        )
    ).first()
    if row is None:
        return False
    if row.expires_ts is not None and row.expires_ts <= now:
        return False
    return not (row.uses_allowed is not None and row.uses >= row.uses_allowed)


async def check_registration(svc: Services, conn: AsyncConnection, token: str | None) -> None:
    """Enforce the registration policy, consuming one use of the token when one is needed."""
    mode = svc.settings.registration
    if mode == "closed":
        raise ClawlistError(403, "M_FORBIDDEN", "registration is closed on this server")
    if mode == "open":
        return
    if not token:
        raise ClawlistError(
            401, "M_MISSING_PARAM", "this server needs a registration_token to register (ask its operator)"
        )
    now = svc.clock.now_ms()
    result = await conn.execute(
        update(registration_tokens)
        .where(
            and_(
                registration_tokens.c.token_hash == hash_secret(token),
                or_(registration_tokens.c.expires_ts.is_(None), registration_tokens.c.expires_ts > now),
                or_(
                    registration_tokens.c.uses_allowed.is_(None),
                    registration_tokens.c.uses < registration_tokens.c.uses_allowed,
                ),
            )
        )
        .values(uses=registration_tokens.c.uses + 1)
    )
    if result.rowcount != 1:
        raise ClawlistError(401, "M_FORBIDDEN", "the registration token is invalid, used up or expired")
