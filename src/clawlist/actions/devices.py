"""Devices: Matrix logins. A Matrix "device" is a session with a `device_id` (chosen by the client,
or generated). Matrix clients rarely refresh tokens, so a device login gets a long-lived opaque
token (a `static` session) unless the client asks for a refresh token (then a JWT session with a
rotating refresh token, like a native login). A native session has no device id of its own: its
session id stands in for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select, update

from clawlist.actions import audit
from clawlist.actions.actor import Actor, require_admin, require_agent
from clawlist.actions.auth import (
    STATIC_PREFIX,
    Challenge,
    check_agent_password,
    forget_session,
    issue_access_token,
    issue_refresh_token,
)
from clawlist.actions.services import Services
from clawlist.actions.users import resolve_agent
from clawlist.core import ids
from clawlist.core.errors import ClawlistError, bad_request, not_found
from clawlist.core.tokens import hash_secret, new_opaque_id, new_secret
from clawlist.storage.tables import login_challenges, refresh_tokens, sessions, static_tokens

DEVICE_ID_LENGTH = 10
LOGIN_TOKEN_PREFIX = "clw_lt_"
MAX_DEVICES_LISTED = 1000


@dataclass(frozen=True)
class DeviceLogin:
    user_id: str
    device_id: str
    session_id: str
    access_token: str
    refresh_token: str | None  # only when the client asked for one
    expires_in_ms: int | None  # the access token's lifetime, when it has one


def new_device_id(svc: Services) -> str:
    """Ten upper-case letters, like the device ids other homeservers hand out."""
    return "".join(chr(ord("A") + b % 26) for b in svc.rng.token_bytes(DEVICE_ID_LENGTH))


def _device_clause(user_id: str, device_id: str) -> Any:
    """The live sessions of one device (a native session answers to its session id)."""
    return and_(
        sessions.c.principal_id == user_id,
        sessions.c.revoked_ts.is_(None),
        or_(
            sessions.c.device_id == device_id,
            and_(sessions.c.device_id.is_(None), sessions.c.session_id == device_id),
        ),
    )


async def start_device_session(
    svc: Services,
    user_id: str,
    *,
    device_id: str | None = None,
    device_name: str | None = None,
    refreshable: bool = False,
    label: str = "matrix login",
) -> DeviceLogin:
    """Open a session for an agent's device. Logging in again with a known device id replaces that
    device's session: its previous tokens stop working (as the Matrix spec requires)."""
    if device_id is not None:
        ids.check_text(device_id, "device_id")
        if not device_id:
            raise bad_request("device_id must not be empty")
    if device_name is not None:
        ids.check_text(device_name, "initial_device_display_name")
    device = device_id or new_device_id(svc)
    session_id = new_opaque_id(svc.rng, 12)
    now = svc.clock.now_ms()
    replaced: list[str] = []
    token: str | None = None
    refresh_token: str | None = None
    async with svc.db.write() as conn:
        if device_id is not None:
            previous = (
                await conn.execute(
                    select(sessions.c.session_id, sessions.c.device_name)
                    .where(_device_clause(user_id, device))
                    .order_by(sessions.c.created_ts)
                )
            ).all()
            replaced = [r.session_id for r in previous]
            if device_name is None and previous:
                device_name = previous[-1].device_name
            if replaced:
                await conn.execute(
                    update(sessions)
                    .where(sessions.c.session_id.in_(replaced))
                    .values(revoked_ts=now, revoked_reason="device_relogin")
                )
        await conn.execute(
            sessions.insert().values(
                session_id=session_id,
                principal_id=user_id,
                principal_kind="agent",
                kind="jwt" if refreshable else "static",
                scope="full",
                label=label,
                created_ts=now,
                device_id=device,
                device_name=device_name,
            )
        )
        if refreshable:
            refresh_token = await issue_refresh_token(svc, conn, session_id, now)
        else:
            token = new_secret(svc.rng, STATIC_PREFIX, 32)
            await conn.execute(
                static_tokens.insert().values(
                    token_hash=hash_secret(token), session_id=session_id, created_ts=now
                )
            )
    for sid in replaced:
        forget_session(svc, sid)
    expires_in_ms: int | None = None
    if refreshable:
        token = await issue_access_token(svc, user_id, "agent", session_id, "full", now)
        expires_in_ms = svc.settings.access_token_ttl_seconds * 1000
    assert token is not None
    return DeviceLogin(user_id, device, session_id, token, refresh_token, expires_in_ms)


async def login_device_with_password(
    svc: Services,
    user_ref: str,
    password: str,
    *,
    device_id: str | None = None,
    device_name: str | None = None,
    refreshable: bool = False,
) -> DeviceLogin:
    """Matrix `m.login.password`: agents only (by `@handle:server` or handle)."""
    agent = await check_agent_password(svc, user_ref, password)
    return await start_device_session(
        svc,
        agent.user_id,
        device_id=device_id,
        device_name=device_name,
        refreshable=refreshable,
        label="matrix password login",
    )


async def mint_login_token(svc: Services, user_ref: str, *, actor: Actor | None = None) -> Challenge:
    """A single-use login token (Matrix `m.login.token`), valid `challenge_ttl_seconds`: an operator
    mints it (`clawlist agent login-token`) and a client exchanges it for a device session. Stored,
    hashed, beside the login challenges; the prefix keeps the two apart."""
    if actor is not None:
        require_admin(actor)
    async with svc.db.read() as conn:
        agent = await resolve_agent(conn, user_ref, svc.settings.server_name)
    if agent.deactivated_ts is not None:
        raise ClawlistError(403, "M_USER_DEACTIVATED", "this account is deactivated")
    token = new_secret(svc.rng, LOGIN_TOKEN_PREFIX, 24)
    now = svc.clock.now_ms()
    expires_at = now + svc.settings.challenge_ttl_seconds * 1000
    async with svc.db.write() as conn:
        await conn.execute(
            login_challenges.insert().values(
                nonce_hash=hash_secret(token), user_id=agent.user_id, expires_ts=expires_at
            )
        )
        await audit.record(
            conn,
            ts=now,
            actor=actor.principal_id if actor else "cli",
            action="login_token.mint",
            target=agent.user_id,
            is_sqlite=svc.db.is_sqlite,
        )
    return Challenge(nonce=token, expires_at=expires_at)


async def login_device_with_token(
    svc: Services,
    token: str,
    *,
    device_id: str | None = None,
    device_name: str | None = None,
    refreshable: bool = False,
) -> DeviceLogin:
    """Matrix `m.login.token`: exchange a login token from `mint_login_token`, once."""
    failure = ClawlistError(403, "M_FORBIDDEN", "invalid, used or expired login token")
    if not isinstance(token, str) or not token.startswith(LOGIN_TOKEN_PREFIX) or len(token) > 255:
        raise failure
    now = svc.clock.now_ms()
    token_hash = hash_secret(token)
    async with svc.db.write() as conn:
        row = (
            await conn.execute(select(login_challenges).where(login_challenges.c.nonce_hash == token_hash))
        ).first()
        if row is None or row.used_ts is not None or row.expires_ts <= now:
            raise failure
        burned = await conn.execute(
            update(login_challenges)
            .where(and_(login_challenges.c.nonce_hash == token_hash, login_challenges.c.used_ts.is_(None)))
            .values(used_ts=now)
        )
    if burned.rowcount != 1:
        raise failure
    async with svc.db.read() as conn:
        agent = await resolve_agent(conn, row.user_id, svc.settings.server_name)
    if agent.deactivated_ts is not None:
        raise ClawlistError(403, "M_USER_DEACTIVATED", "this account is deactivated")
    return await start_device_session(
        svc,
        agent.user_id,
        device_id=device_id,
        device_name=device_name,
        refreshable=refreshable,
        label="matrix token login",
    )


async def device_of(svc: Services, actor: Actor) -> str:
    """The device id of the actor's session (its session id when it has none of its own)."""
    async with svc.db.read() as conn:
        device = (
            await conn.execute(select(sessions.c.device_id).where(sessions.c.session_id == actor.session_id))
        ).scalar()
    return str(device) if device else actor.session_id


def _live_sessions(user_id: str, now: int) -> Any:
    """An agent's sessions that can still be used: not revoked, and either a long-lived token or a
    JWT family with an unexpired, unused refresh token."""
    refreshable = (
        select(refresh_tokens.c.token_hash)
        .where(
            and_(
                refresh_tokens.c.session_id == sessions.c.session_id,
                refresh_tokens.c.used_ts.is_(None),
                refresh_tokens.c.expires_ts > now,
            )
        )
        .exists()
    )
    return (
        select(sessions.c.session_id, sessions.c.device_id, sessions.c.device_name, sessions.c.created_ts)
        .where(
            and_(
                sessions.c.principal_id == user_id,
                sessions.c.revoked_ts.is_(None),
                or_(sessions.c.kind == "static", refreshable),
            )
        )
        .order_by(sessions.c.created_ts.desc())
        .limit(MAX_DEVICES_LISTED)
    )


def _device_dict(row: Any) -> dict[str, Any]:
    # Every key present, null when unknown (matrix-nio requires them); activity is not tracked.
    return {
        "device_id": row.device_id or row.session_id,
        "display_name": row.device_name,
        "last_seen_ip": None,
        "last_seen_ts": None,
    }


async def list_devices(svc: Services, actor: Actor) -> list[dict[str, Any]]:
    user_id = require_agent(actor)
    async with svc.db.read() as conn:
        rows = (await conn.execute(_live_sessions(user_id, svc.clock.now_ms()))).all()
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(row.device_id or row.session_id, _device_dict(row))
    return list(seen.values())


async def get_device(svc: Services, actor: Actor, device_id: str) -> dict[str, Any]:
    for device in await list_devices(svc, actor):
        if device["device_id"] == device_id:
            return device
    raise not_found(f"no device {device_id}")


async def rename_device(svc: Services, actor: Actor, device_id: str, display_name: str | None) -> None:
    user_id = require_agent(actor)
    if display_name is not None:
        ids.check_text(display_name, "display_name")
    await get_device(svc, actor, device_id)
    async with svc.db.write() as conn:
        await conn.execute(
            update(sessions).where(_device_clause(user_id, device_id)).values(device_name=display_name)
        )


async def verify_own_password(svc: Services, actor: Actor, user_ref: str | None, password: str) -> None:
    """Re-authentication (Matrix `m.login.password` in user-interactive auth): the password must be
    the acting agent's, and `user_ref`, when given, must name that agent. 403 otherwise."""
    user_id = require_agent(actor)
    agent = await check_agent_password(svc, user_ref or user_id, password)
    if agent.user_id != user_id:
        raise ClawlistError(403, "M_FORBIDDEN", "invalid username or password")


async def revoke_other_sessions(svc: Services, actor: Actor, *, reason: str = "password_change") -> int:
    """Revoke every session of the actor but the current one (e.g. after a password change)."""
    now = svc.clock.now_ms()
    async with svc.db.write() as conn:
        ids_ = [
            r.session_id
            for r in (
                await conn.execute(
                    select(sessions.c.session_id).where(
                        and_(
                            sessions.c.principal_id == actor.principal_id,
                            sessions.c.revoked_ts.is_(None),
                            sessions.c.session_id != actor.session_id,
                        )
                    )
                )
            ).all()
        ]
        if ids_:
            await conn.execute(
                update(sessions)
                .where(sessions.c.session_id.in_(ids_))
                .values(revoked_ts=now, revoked_reason=reason)
            )
    for sid in ids_:
        forget_session(svc, sid)
    return len(ids_)
