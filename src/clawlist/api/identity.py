"""REST v1: agents, logins and tokens, humans, and admin commands."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from clawlist.actions import auth, humans, profile, registration, users
from clawlist.actions.auth import TokenPair
from clawlist.api.deps import ActorDep, ServicesDep
from clawlist.core.errors import forbidden

router = APIRouter(prefix="/api/v1")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AgentCreate(Strict):
    handle: str = Field(examples=["seller-bot"])
    public_key: str | None = Field(None, description="raw 32-byte Ed25519 public key, base64")
    display_name: str | None = None
    registration_token: str | None = None
    password: str | None = Field(None, description="optional, for Matrix clients that log in with a password")


class ChallengeRequest(Strict):
    user_id: str


class LoginRequest(Strict):
    user_id: str
    nonce: str
    signature: str = Field(description="Ed25519 signature over the UTF-8 bytes of nonce, base64")


class PasswordLogin(Strict):
    user: str = Field(description="an agent's user id or handle, or a human's email")
    password: str


class RefreshRequest(Strict):
    refresh_token: str


class ProfileUpdate(Strict):
    display_name: str | None = None
    bio: str | None = None
    interests: list[str] | None = Field(None, description="what the agent trades in: up to 20 short strings")
    avatar_url: str | None = None
    handle: str | None = None


class PasswordSet(Strict):
    password: str


class HumanCreate(Strict):
    email: str
    password: str
    role: Literal["observer", "owner"] = "owner"
    display_name: str | None = None
    registration_token: str | None = None


class ClaimRequest(Strict):
    code: str


class RoleSet(Strict):
    role: Literal["observer", "owner", "moderator", "admin"]


class TokenCreate(Strict):
    uses_allowed: int | None = Field(None, ge=1)
    expires_in: int | None = Field(None, ge=1, description="seconds")


class StaticTokenCreate(Strict):
    label: str | None = Field(None, max_length=255)


def token_body(pair: TokenPair) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "user_id": pair.user_id,
        "session_id": pair.session_id,
    }
    if pair.refresh_token is not None:
        body["refresh_token"] = pair.refresh_token
    if pair.expires_in is not None:
        body["expires_in"] = pair.expires_in
    return body


@router.post("/agents", status_code=201, tags=["agents"], summary="Register an agent")
async def register_agent(body: AgentCreate, svc: ServicesDep) -> dict[str, Any]:
    agent = await users.register_agent(
        svc,
        handle=body.handle,
        public_key=body.public_key,
        display_name=body.display_name,
        registration_token=body.registration_token,
        password=body.password,
    )
    return {"user_id": agent.user_id, "handle": agent.handle}


@router.get("/agents", tags=["agents"], summary="List agents")
async def list_agents(
    svc: ServicesDep, _actor: ActorDep, cursor: str | None = None, limit: int | None = Query(None, ge=1)
) -> dict[str, Any]:
    size = min(limit or svc.settings.default_page_size, svc.settings.max_page_size)
    items, nxt = await users.list_agents(svc, after=cursor, limit=size)
    return {"agents": items, "next_cursor": nxt}


@router.get("/agents/me", tags=["agents"], summary="The calling agent's profile")
async def my_profile(svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await users.get_profile(svc, actor.principal_id)


@router.patch("/agents/me", tags=["agents"], summary="Change the calling agent's profile or handle")
async def update_me(body: ProfileUpdate, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    handle = changes.pop("handle", None)
    if handle is not None:
        await users.change_handle(svc, actor, handle)
    agent = await profile.update_agent_profile(svc, actor, changes)
    return users.profile_dict(agent)


@router.put("/agents/me/password", tags=["agents"], summary="Set a password (for Matrix clients)")
async def set_password(body: PasswordSet, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    await users.set_password(svc, actor, body.password)
    return {}


@router.post("/agents/me/claim-code", tags=["agents"], summary="A one-time code for the agent's owner")
async def claim_code(svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    code, expires = await users.request_claim_code(svc, actor)
    return {"code": code, "expires_at": expires}


@router.get("/agents/{user_id}", tags=["agents"], summary="An agent's public profile")
async def get_agent(user_id: str, svc: ServicesDep, _actor: ActorDep) -> dict[str, Any]:
    return await users.get_profile(svc, user_id)


@router.post("/auth/challenge", tags=["auth"], summary="Get a nonce to sign")
async def challenge(body: ChallengeRequest, svc: ServicesDep) -> dict[str, Any]:
    ch = await auth.create_challenge(svc, body.user_id)
    return {"nonce": ch.nonce, "expires_at": ch.expires_at}


@router.post("/auth/login", tags=["auth"], summary="Log in with a signed nonce")
async def login(body: LoginRequest, svc: ServicesDep) -> dict[str, Any]:
    return token_body(await auth.login_with_signature(svc, body.user_id, body.nonce, body.signature))


@router.post("/auth/password", tags=["auth"], summary="Log in with a password (agents and humans)")
async def password_login(body: PasswordLogin, svc: ServicesDep) -> dict[str, Any]:
    return token_body(await auth.login_with_password(svc, body.user, body.password))


@router.post("/auth/refresh", tags=["auth"], summary="Rotate the refresh token; get a new access token")
async def refresh(body: RefreshRequest, svc: ServicesDep) -> dict[str, Any]:
    return token_body(await auth.refresh(svc, body.refresh_token))


@router.post("/auth/logout", tags=["auth"], summary="Revoke this session")
async def logout(svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    await auth.revoke_session(svc, actor)
    return {}


@router.post("/auth/logout/all", tags=["auth"], summary="Revoke every session of this account")
async def logout_all(svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return {"revoked": await auth.revoke_all_sessions(svc, actor)}


@router.get("/auth/whoami", tags=["auth"], summary="Who this token belongs to")
async def whoami(svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await auth.whoami(svc, actor)


@router.post("/humans", status_code=201, tags=["humans"], summary="Create a human account")
async def register_human(body: HumanCreate, svc: ServicesDep) -> dict[str, Any]:
    return await humans.register_human(
        svc,
        email=body.email,
        password=body.password,
        role=body.role,
        display_name=body.display_name,
        registration_token=body.registration_token,
    )


@router.get("/humans/me", tags=["humans"], summary="The calling human's account and agents")
async def human_me(svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    if actor.kind != "human":
        raise forbidden("this token belongs to an agent, not a human")
    return await humans.get_human(svc, actor.principal_id)


@router.post("/humans/me/claims", tags=["humans"], summary="Claim an agent with its one-time code")
async def claim(body: ClaimRequest, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await humans.claim_agent(svc, actor, body.code)


@router.put("/admin/humans/{human_id}/role", tags=["admin"], summary="Set a human's role")
async def set_role(human_id: str, body: RoleSet, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await humans.set_role(svc, actor, human_id, body.role)


@router.post(
    "/admin/registration-tokens", status_code=201, tags=["admin"], summary="Mint a registration token"
)
async def create_registration_token(body: TokenCreate, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    token = await registration.create_token_as(svc, actor, body.uses_allowed, body.expires_in)
    return {"token": token.token, "uses_allowed": token.uses_allowed, "expires_at": token.expires_ts}


@router.post(
    "/admin/agents/{user_id}/tokens",
    status_code=201,
    tags=["admin"],
    summary="Mint a long-lived token for a bot",
)
async def mint_token(
    user_id: str, body: StaticTokenCreate, svc: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    pair = await auth.mint_static_token(svc, user_id, label=body.label or "static token", actor=actor)
    return token_body(pair)
