"""Logins and tokens: Ed25519 challenge-response, passwords, JWT access tokens, rotating refresh
tokens, long-lived static tokens. Every stored token or code is a hash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from clawlist.actions import audit
from clawlist.actions.actor import Actor, PrincipalKind, require_admin
from clawlist.actions.passwords import verify_password
from clawlist.actions.services import Services
from clawlist.actions.users import AgentRecord, resolve_agent
from clawlist.core.errors import ClawlistError, forbidden, not_found, unauthorized
from clawlist.core.keys import verify_signature
from clawlist.core.tokens import hash_secret, new_opaque_id, new_secret
from clawlist.storage.tables import (
    agents,
    humans,
    login_challenges,
    refresh_tokens,
    server_secrets,
    sessions,
    static_tokens,
)

JWT_ALGORITHM = "HS256"
STATIC_PREFIX = "clw_at_"
REFRESH_PREFIX = "clw_rt_"
_SESSION_CACHE_KEY = "auth.sessions"
_SECRET_CACHE_KEY = "auth.jwt_secret"
SESSION_CACHE_SECONDS = 1.0
_VERIFIED_JWT_CACHE_KEY = "auth.verified_jwt"
_STATIC_TOKEN_CACHE_KEY = "auth.static_tokens"
_STATIC_TOKEN_BY_HASH = select(static_tokens.c.session_id, static_tokens.c.expires_ts).where(
    static_tokens.c.token_hash == bindparam("token_hash")
)
VERIFIED_TOKEN_CACHE_SIZE = 50_000


@dataclass(frozen=True)
class Challenge:
    nonce: str
    expires_at: int


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str | None
    expires_in: int | None
    user_id: str
    session_id: str


async def jwt_secret(svc: Services) -> str:
    if svc.settings.jwt_secret:
        return svc.settings.jwt_secret
    cached = svc.cache.get(_SECRET_CACHE_KEY)
    if cached:
        return str(cached)
    async with svc.db.read() as conn:
        value = (
            await conn.execute(select(server_secrets.c.value).where(server_secrets.c.name == "jwt_secret"))
        ).scalar()
    if value is None:
        candidate = new_secret(svc.rng, "", 48)
        try:
            async with svc.db.write() as conn:
                await conn.execute(
                    server_secrets.insert().values(
                        name="jwt_secret", value=candidate, created_ts=svc.clock.now_ms()
                    )
                )
            value = candidate
        except IntegrityError:  # another process created it first
            async with svc.db.read() as conn:
                value = (
                    await conn.execute(
                        select(server_secrets.c.value).where(server_secrets.c.name == "jwt_secret")
                    )
                ).scalar_one()
    svc.cache[_SECRET_CACHE_KEY] = value
    return str(value)


async def create_challenge(svc: Services, user_ref: str) -> Challenge:
    async with svc.db.read() as conn:
        agent = await resolve_agent(conn, user_ref, svc.settings.server_name)
    if agent.public_key is None:
        raise forbidden("this agent has no public key; log in with a password or a token")
    nonce = new_secret(svc.rng, "clawlist-login:", 24)
    now = svc.clock.now_ms()
    expires_at = now + svc.settings.challenge_ttl_seconds * 1000
    async with svc.db.write() as conn:
        await conn.execute(
            login_challenges.insert().values(
                nonce_hash=hash_secret(nonce), user_id=agent.user_id, expires_ts=expires_at
            )
        )
    return Challenge(nonce=nonce, expires_at=expires_at)


async def login_with_signature(svc: Services, user_ref: str, nonce: str, signature: str) -> TokenPair:
    now = svc.clock.now_ms()
    async with svc.db.read() as conn:
        agent = await resolve_agent(conn, user_ref, svc.settings.server_name)
    if not isinstance(nonce, str) or not nonce:
        raise ClawlistError(400, "M_INVALID_PARAM", "nonce is required")
    async with svc.db.write() as conn:
        row = (
            await conn.execute(
                select(login_challenges).where(login_challenges.c.nonce_hash == hash_secret(nonce))
            )
        ).first()
        if row is None or row.user_id != agent.user_id:
            raise ClawlistError(403, "M_FORBIDDEN", "unknown nonce; ask for a new challenge")
        if row.used_ts is not None:
            raise ClawlistError(403, "M_FORBIDDEN", "this nonce was already used; ask for a new challenge")
        if row.expires_ts <= now:
            raise ClawlistError(403, "M_FORBIDDEN", "this nonce has expired; ask for a new challenge")
        if agent.public_key is None:
            raise forbidden("this agent has no public key")
        # Burn the nonce before checking the signature: a wrong guess costs the nonce. The
        # compare-and-set makes it single-use even when two logins race with the same nonce.
        burned = await conn.execute(
            update(login_challenges)
            .where(
                and_(login_challenges.c.nonce_hash == row.nonce_hash, login_challenges.c.used_ts.is_(None))
            )
            .values(used_ts=now)
        )
        if burned.rowcount != 1:
            raise ClawlistError(403, "M_FORBIDDEN", "this nonce was already used; ask for a new challenge")
    verify_signature(agent.public_key, nonce.encode("utf-8"), signature)
    return await _start_session(svc, agent.user_id, "agent", scope="full", label="key login")


async def login_with_password(svc: Services, identifier: str, password: str) -> TokenPair:
    """Agents by user id or handle, humans by email. One error for every failure."""
    failure = ClawlistError(403, "M_FORBIDDEN", "invalid username or password")
    if not isinstance(identifier, str) or not isinstance(password, str) or not identifier:
        raise failure
    if "@" in identifier and not identifier.startswith("@"):
        async with svc.db.read() as conn:
            human = (await conn.execute(select(humans).where(humans.c.email == identifier.lower()))).first()
        if not await verify_password(human.password_hash if human else None, password) or human is None:
            raise failure
        if human.deactivated_ts is not None:
            raise ClawlistError(403, "M_USER_DEACTIVATED", "this account is deactivated")
        scope: Literal["full", "read"] = "read" if human.role == "observer" else "full"
        return await _start_session(svc, human.human_id, "human", scope=scope, label="password login")
    agent = await check_agent_password(svc, identifier, password)
    return await _start_session(svc, agent.user_id, "agent", scope="full", label="password login")


async def check_agent_password(svc: Services, user_ref: str, password: str) -> AgentRecord:
    """The agent behind `user_ref` if `password` is its password; one 403 for every failure, so the
    answer (and, thanks to the dummy hash, the time taken) does not tell which agents exist."""
    failure = ClawlistError(403, "M_FORBIDDEN", "invalid username or password")
    if not isinstance(user_ref, str) or not isinstance(password, str) or not user_ref:
        raise failure
    try:
        async with svc.db.read() as conn:
            agent: AgentRecord | None = await resolve_agent(conn, user_ref, svc.settings.server_name)
    except ClawlistError:
        agent = None
    if not await verify_password(agent.password_hash if agent else None, password) or agent is None:
        raise failure
    if agent.deactivated_ts is not None:
        raise ClawlistError(403, "M_USER_DEACTIVATED", "this account is deactivated")
    return agent


async def _start_session(
    svc: Services, principal_id: str, kind: PrincipalKind, *, scope: Literal["full", "read"], label: str
) -> TokenPair:
    session_id = new_opaque_id(svc.rng, 12)
    now = svc.clock.now_ms()
    async with svc.db.write() as conn:
        await conn.execute(
            sessions.insert().values(
                session_id=session_id,
                principal_id=principal_id,
                principal_kind=kind,
                kind="jwt",
                scope=scope,
                label=label,
                created_ts=now,
            )
        )
        refresh = await issue_refresh_token(svc, conn, session_id, now)
    access = await issue_access_token(svc, principal_id, kind, session_id, scope, now)
    return TokenPair(access, refresh, svc.settings.access_token_ttl_seconds, principal_id, session_id)


async def issue_refresh_token(svc: Services, conn: Any, session_id: str, now: int) -> str:
    token = new_secret(svc.rng, REFRESH_PREFIX, 32)
    await conn.execute(
        refresh_tokens.insert().values(
            token_hash=hash_secret(token),
            session_id=session_id,
            issued_ts=now,
            expires_ts=now + svc.settings.refresh_token_ttl_seconds * 1000,
        )
    )
    return token


async def issue_access_token(
    svc: Services, principal_id: str, kind: str, session_id: str, scope: str, now: int
) -> str:
    claims = {
        "sub": principal_id,
        "sid": session_id,
        "knd": kind,
        "scp": scope,
        "iat": now // 1000,
        "exp": now // 1000 + svc.settings.access_token_ttl_seconds,
        "iss": svc.settings.server_name,
    }
    return jwt.encode(claims, await jwt_secret(svc), algorithm=JWT_ALGORITHM)


async def refresh(svc: Services, refresh_token: str) -> TokenPair:
    if not isinstance(refresh_token, str) or not refresh_token:
        raise unauthorized("refresh_token is required", "M_MISSING_TOKEN")
    now = svc.clock.now_ms()
    new_refresh: str | None = None
    async with svc.db.write() as conn:
        row = (
            await conn.execute(
                select(refresh_tokens, sessions)
                .select_from(
                    refresh_tokens.join(sessions, sessions.c.session_id == refresh_tokens.c.session_id)
                )
                .where(refresh_tokens.c.token_hash == hash_secret(refresh_token))
            )
        ).first()
        if row is None:
            raise unauthorized("unknown refresh token")
        if row.revoked_ts is not None:
            raise unauthorized("this session was revoked; log in again")
        if row.used_ts is None and row.expires_ts <= now:
            raise unauthorized("refresh token expired; log in again")
        if row.used_ts is None:
            # Compare-and-set: of two concurrent refreshes with one token, only one wins; the
            # loser is treated as a reuse below.
            result = await conn.execute(
                update(refresh_tokens)
                .where(
                    and_(refresh_tokens.c.token_hash == row.token_hash, refresh_tokens.c.used_ts.is_(None))
                )
                .values(used_ts=now)
            )
            if result.rowcount == 1:
                new_refresh = await issue_refresh_token(svc, conn, row.session_id, now)
        if new_refresh is None:
            # Reuse of a rotated token means it leaked: revoke the whole family. The error is
            # raised after this transaction commits, or the revocation would roll back with it.
            await conn.execute(
                update(sessions)
                .where(sessions.c.session_id == row.session_id)
                .values(revoked_ts=now, revoked_reason="refresh_token_reuse")
            )
            await audit.record(
                conn,
                ts=now,
                actor=row.principal_id,
                action="session.revoked",
                target=row.session_id,
                details={"reason": "refresh_token_reuse"},
                is_sqlite=svc.db.is_sqlite,
            )
    if new_refresh is None:
        forget_session(svc, row.session_id)
        raise unauthorized("refresh token reuse detected; this session is revoked, log in again")
    access = await issue_access_token(
        svc, row.principal_id, row.principal_kind, row.session_id, row.scope, now
    )
    return TokenPair(
        access, new_refresh, svc.settings.access_token_ttl_seconds, row.principal_id, row.session_id
    )


async def mint_static_token(
    svc: Services, user_ref: str, *, label: str = "static token", actor: Actor | None = None
) -> TokenPair:
    """A long-lived token for bots configured with a static token (`clawlist agent token`)."""
    if actor is not None:
        require_admin(actor)
    async with svc.db.read() as conn:
        agent = await resolve_agent(conn, user_ref, svc.settings.server_name)
    token = new_secret(svc.rng, STATIC_PREFIX, 32)
    session_id = new_opaque_id(svc.rng, 12)
    now = svc.clock.now_ms()
    async with svc.db.write() as conn:
        await conn.execute(
            sessions.insert().values(
                session_id=session_id,
                principal_id=agent.user_id,
                principal_kind="agent",
                kind="static",
                scope="full",
                label=label,
                created_ts=now,
            )
        )
        await conn.execute(
            static_tokens.insert().values(
                token_hash=hash_secret(token), session_id=session_id, created_ts=now
            )
        )
        await audit.record(
            conn,
            ts=now,
            actor=actor.principal_id if actor else "cli",
            action="token.mint",
            target=agent.user_id,
            details={"session": session_id},
            is_sqlite=svc.db.is_sqlite,
        )
    return TokenPair(token, None, None, agent.user_id, session_id)


def forget_session(svc: Services, session_id: str) -> None:
    cache: dict[str, Any] = svc.cache.setdefault(_SESSION_CACHE_KEY, {})
    cache.pop(session_id, None)


async def revoke_session(svc: Services, actor: Actor, *, reason: str = "logout") -> None:
    now = svc.clock.now_ms()
    async with svc.db.write() as conn:
        await conn.execute(
            update(sessions)
            .where(and_(sessions.c.session_id == actor.session_id, sessions.c.revoked_ts.is_(None)))
            .values(revoked_ts=now, revoked_reason=reason)
        )
    forget_session(svc, actor.session_id)


async def revoke_all_sessions(svc: Services, actor: Actor) -> int:
    now = svc.clock.now_ms()
    async with svc.db.write() as conn:
        ids = [
            r.session_id
            for r in (
                await conn.execute(
                    select(sessions.c.session_id).where(
                        and_(sessions.c.principal_id == actor.principal_id, sessions.c.revoked_ts.is_(None))
                    )
                )
            ).all()
        ]
        await conn.execute(
            update(sessions)
            .where(sessions.c.session_id.in_(ids))
            .values(revoked_ts=now, revoked_reason="logout_all")
        )
    for sid in ids:
        forget_session(svc, sid)
    return len(ids)


async def authenticate(svc: Services, token: str) -> Actor:
    """The actor behind an access token (JWT or static). Raises 401 M_UNKNOWN_TOKEN otherwise."""
    if token.startswith(STATIC_PREFIX):
        return await _authenticate_static(svc, token)
    # A verified token is remembered (its expiry and session), so the signature is checked once per
    # token, not once per request. Expiry and session revocation are still checked every time.
    verified: dict[str, tuple[int, str]] = svc.cache.setdefault(_VERIFIED_JWT_CACHE_KEY, {})
    known = verified.get(token)
    if known is None:
        try:
            claims = jwt.decode(
                token,
                await jwt_secret(svc),
                algorithms=[JWT_ALGORITHM],
                options={"require": ["exp", "sub", "sid"], "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise unauthorized("unrecognised access token") from exc
        known = (int(claims["exp"]) * 1000, str(claims["sid"]))
        if len(verified) >= VERIFIED_TOKEN_CACHE_SIZE:
            verified.clear()
        verified[token] = known
    if known[0] <= svc.clock.now_ms():
        raise ClawlistError(401, "M_UNKNOWN_TOKEN", "access token expired; refresh it", soft_logout=True)
    return await _session_actor(svc, known[1])


async def _authenticate_static(svc: Services, token: str) -> Actor:
    # A static token's row never changes (it is revoked through its session, checked every time),
    # so its hash -> (session, expiry) mapping is remembered.
    known_tokens: dict[str, tuple[str, int | None]] = svc.cache.setdefault(_STATIC_TOKEN_CACHE_KEY, {})
    token_hash = hash_secret(token)
    known = known_tokens.get(token_hash)
    if known is None:
        async with svc.db.read() as conn:
            row = (await conn.execute(_STATIC_TOKEN_BY_HASH, {"token_hash": token_hash})).first()
        if row is None:
            raise unauthorized("unrecognised access token")
        known = (str(row.session_id), row.expires_ts)
        if len(known_tokens) >= VERIFIED_TOKEN_CACHE_SIZE:
            known_tokens.clear()
        known_tokens[token_hash] = known
    if known[1] is not None and known[1] <= svc.clock.now_ms():
        raise unauthorized("access token expired")
    return await _session_actor(svc, known[0])


async def _session_actor(svc: Services, session_id: str) -> Actor:
    cache: dict[str, tuple[float, Actor]] = svc.cache.setdefault(_SESSION_CACHE_KEY, {})
    hit = cache.get(session_id)
    now_mono = time.monotonic()
    if hit is not None and hit[0] > now_mono:
        return hit[1]
    async with svc.db.read() as conn:
        row = (await conn.execute(select(sessions).where(sessions.c.session_id == session_id))).first()
        role = None
        if row is not None and row.principal_kind == "human":
            human = (
                await conn.execute(
                    select(humans.c.role, humans.c.deactivated_ts).where(
                        humans.c.human_id == row.principal_id
                    )
                )
            ).first()
            if human is None or human.deactivated_ts is not None:
                raise unauthorized("this account is deactivated")
            role = human.role
        elif row is not None:
            agent = (
                await conn.execute(
                    select(agents.c.deactivated_ts, agents.c.kind).where(agents.c.user_id == row.principal_id)
                )
            ).first()
            if agent is None or agent.deactivated_ts is not None:
                raise unauthorized("this account is deactivated")
    if row is None or row.revoked_ts is not None:
        raise unauthorized("this token was revoked; log in again")
    scope = row.scope
    if row.principal_kind == "human":
        # A human's scope follows the current role, so a role change applies to live sessions.
        scope = "read" if role == "observer" else "full"
    actor = Actor(
        principal_id=row.principal_id,
        kind=row.principal_kind,
        session_id=session_id,
        scope=scope,
        role=role,
    )
    if len(cache) > 100_000:
        cache.clear()
    cache[session_id] = (now_mono + SESSION_CACHE_SECONDS, actor)
    return actor


async def whoami(svc: Services, actor: Actor) -> dict[str, Any]:
    out: dict[str, Any] = {
        "user_id": actor.principal_id,
        "kind": actor.kind,
        "session_id": actor.session_id,
        "scope": actor.scope,
    }
    if actor.role:
        out["role"] = actor.role
    return out


def session_not_found(session_id: str) -> ClawlistError:
    return not_found(f"no session {session_id}")


def forget_all_sessions_cache(svc: Services) -> None:
    svc.cache.pop(_SESSION_CACHE_KEY, None)
