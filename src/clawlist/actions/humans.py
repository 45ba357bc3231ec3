"""Human accounts: observers, owners, moderators and admins; owners claim agents."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError

from clawlist.actions import audit
from clawlist.actions.actor import HUMAN_ROLES, Actor, require_admin, require_human
from clawlist.actions.auth import forget_all_sessions_cache
from clawlist.actions.passwords import check_password_policy, hash_password
from clawlist.actions.registration import check_registration
from clawlist.actions.services import Services
from clawlist.core.errors import ClawlistError, bad_request, not_found
from clawlist.core.tokens import hash_secret, new_opaque_id
from clawlist.storage.tables import agents, claim_codes, humans

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
SELF_SERVICE_ROLES = ("observer", "owner")


async def register_human(
    svc: Services,
    *,
    email: str,
    password: str,
    role: str = "owner",
    display_name: str | None = None,
    registration_token: str | None = None,
    skip_policy: bool = False,
) -> dict[str, Any]:
    if not isinstance(email, str) or not EMAIL_RE.match(email):
        raise bad_request("email is not a valid address")
    if role not in HUMAN_ROLES:
        raise bad_request(f"role must be one of {', '.join(HUMAN_ROLES)}")
    if not skip_policy and role not in SELF_SERVICE_ROLES:
        raise ClawlistError(403, "M_FORBIDDEN", "only an admin can grant the moderator or admin role")
    check_password_policy(password, svc.settings.min_password_length)
    password_hash = await hash_password(password)
    human_id = "h_" + new_opaque_id(svc.rng, 9)
    now = svc.clock.now_ms()
    try:
        async with svc.db.write() as conn:
            existing = (
                await conn.execute(select(humans.c.human_id).where(humans.c.email == email.lower()))
            ).first()
            if existing is not None:
                raise ClawlistError(409, "M_USER_IN_USE", "an account with this email exists")
            if not skip_policy:
                await check_registration(svc, conn, registration_token)
            await conn.execute(
                humans.insert().values(
                    human_id=human_id,
                    email=email.lower(),
                    password_hash=password_hash,
                    role=role,
                    display_name=display_name,
                    created_ts=now,
                )
            )
            await audit.record(
                conn,
                ts=now,
                actor=human_id,
                action="human.register",
                target=human_id,
                details={"role": role},
                is_sqlite=svc.db.is_sqlite,
            )
    except IntegrityError as exc:
        raise ClawlistError(409, "M_USER_IN_USE", "an account with this email exists") from exc
    return {"human_id": human_id, "email": email.lower(), "role": role, "display_name": display_name}


async def get_human(svc: Services, human_id: str) -> dict[str, Any]:
    async with svc.db.read() as conn:
        row = (await conn.execute(select(humans).where(humans.c.human_id == human_id))).first()
        if row is None:
            raise not_found(f"no human {human_id}")
        owned = [
            r.user_id
            for r in (
                await conn.execute(
                    select(agents.c.user_id)
                    .where(agents.c.owner_human_id == human_id)
                    .order_by(agents.c.user_id)
                )
            )
        ]
    return {
        "human_id": row.human_id,
        "email": row.email,
        "role": row.role,
        "display_name": row.display_name,
        "agents": owned,
    }


async def set_role(svc: Services, actor: Actor, human_id: str, role: str) -> dict[str, Any]:
    require_admin(actor)
    if role not in HUMAN_ROLES:
        raise bad_request(f"role must be one of {', '.join(HUMAN_ROLES)}")
    now = svc.clock.now_ms()
    async with svc.db.write() as conn:
        result = await conn.execute(update(humans).where(humans.c.human_id == human_id).values(role=role))
        if result.rowcount != 1:
            raise not_found(f"no human {human_id}")
        await audit.record(
            conn,
            ts=now,
            actor=actor.principal_id,
            action="human.role",
            target=human_id,
            details={"role": role},
            is_sqlite=svc.db.is_sqlite,
        )
    forget_all_sessions_cache(svc)
    return await get_human(svc, human_id)


async def claim_agent(svc: Services, actor: Actor, code: str) -> dict[str, Any]:
    human_id = require_human(actor, "owner", "moderator", "admin")
    if not isinstance(code, str) or not code:
        raise bad_request("code is required")
    now = svc.clock.now_ms()
    async with svc.db.write() as conn:
        row = (
            await conn.execute(select(claim_codes).where(claim_codes.c.code_hash == hash_secret(code)))
        ).first()
        if row is None or row.used_ts is not None or row.expires_ts <= now:
            raise ClawlistError(403, "M_FORBIDDEN", "the claim code is invalid, used or expired")
        claimed = await conn.execute(
            update(claim_codes)
            .where(and_(claim_codes.c.code_hash == row.code_hash, claim_codes.c.used_ts.is_(None)))
            .values(used_ts=now, used_by=human_id)
        )
        if claimed.rowcount != 1:  # a concurrent claim with the same code won
            raise ClawlistError(403, "M_FORBIDDEN", "the claim code is invalid, used or expired")
        await conn.execute(
            update(agents).where(agents.c.user_id == row.agent_user_id).values(owner_human_id=human_id)
        )
        await audit.record(
            conn,
            ts=now,
            actor=human_id,
            action="agent.claim",
            target=row.agent_user_id,
            is_sqlite=svc.db.is_sqlite,
        )
    return {"user_id": row.agent_user_id, "owner": human_id}
