"""Identity over the REST API: registration policy, handles, logins, tokens, passwords, humans,
secrets at rest and the first start. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from clawlist.actions.audit import verify_chain
from clawlist.app import create_app
from clawlist.core.clock import FrozenClock
from clawlist.settings import Settings
from clawlist.storage import tables
from tests.helpers import Agent, login, new_keypair, register, send, sign

SERVER = "test.local"
PASSWORD = "correct horse battery staple"


# ---------------------------------------------------------------- helpers


@asynccontextmanager
async def running(
    settings: Settings, **kwargs: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, list[str]]]:
    """A started app and a client for it, like the `app_env` fixture, with our own settings."""
    announced: list[str] = []
    app = create_app(settings, announce=announced.append, **kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client, announced


def uid(handle: str) -> str:
    return f"@{handle}:{SERVER}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def path_part(ref: str) -> str:
    return quote(ref, safe="")


async def try_register(
    client: httpx.AsyncClient, handle: Any, token: str | None = None, **extra: Any
) -> httpx.Response:
    _key, public = new_keypair()
    body: dict[str, Any] = {"handle": handle, "public_key": public, **extra}
    if token is not None:
        body["registration_token"] = token
    return await client.post("/api/v1/agents", json=body)


async def agent_exists(app: FastAPI, user_id: str) -> bool:
    async with app.state.services.db.read() as conn:
        row = (
            await conn.execute(select(tables.agents.c.user_id).where(tables.agents.c.user_id == user_id))
        ).first()
    return row is not None


async def count_rows(app: FastAPI, table: Any) -> int:
    async with app.state.services.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def admin_login(client: httpx.AsyncClient, first: Any) -> str:
    r = await client.post(
        "/api/v1/auth/password", json={"user": first.admin_email, "password": first.admin_password}
    )
    assert r.status_code == 200, r.text
    assert r.json()["user_id"].startswith("h_")
    return str(r.json()["access_token"])


async def mint_registration_token(client: httpx.AsyncClient, admin_token: str, **body: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/admin/registration-tokens", headers=bearer(admin_token), json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def whoami(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/api/v1/auth/whoami", headers=bearer(token))


async def create_human(
    client: httpx.AsyncClient, reg_token: str, email: str, role: str = "owner"
) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/humans",
        json={"email": email, "password": PASSWORD, "role": role, "registration_token": reg_token},
    )
    assert r.status_code == 201, r.text
    human: dict[str, Any] = r.json()
    r = await client.post("/api/v1/auth/password", json={"user": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    human["access_token"] = r.json()["access_token"]
    human["refresh_token"] = r.json().get("refresh_token")
    return human


def assert_error(r: httpx.Response, status: int, errcode: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body.get("errcode"), str) and body["errcode"], body
    assert isinstance(body.get("error"), str), body
    if errcode is not None:
        assert body["errcode"] == errcode, body


# ---------------------------------------------------------------- registration policy


async def test_token_mode_rejects_missing_invalid_and_creates_nothing(app_env):
    client, app = app_env["client"], app_env["app"]
    assert app_env["settings"].registration == "token"
    agents_before = await count_rows(app, tables.agents)

    r = await try_register(client, "nobody1")
    assert 400 <= r.status_code < 500
    assert_error(r, r.status_code, "M_MISSING_PARAM")

    r = await try_register(client, "nobody2", token="clw_reg_not-a-real-token")
    assert 400 <= r.status_code < 500
    assert_error(r, r.status_code, "M_FORBIDDEN")

    r = await try_register(client, "nobody3", token="")
    assert 400 <= r.status_code < 500
    assert r.json()["errcode"]

    for handle in ("nobody1", "nobody2", "nobody3"):
        assert not await agent_exists(app, uid(handle))
    assert await count_rows(app, tables.agents) == agents_before

    # The handle was not burned by the failure: a valid token can still take it.
    r = await try_register(client, "nobody1", token=app_env["token"])
    assert r.status_code == 201, r.text


async def test_token_with_uses_allowed_allows_exactly_n(app_env):
    client, app = app_env["client"], app_env["app"]
    admin = await admin_login(client, app_env["first"])
    minted = await mint_registration_token(client, admin, uses_allowed=2)
    assert minted["uses_allowed"] == 2
    token = minted["token"]
    assert token.startswith("clw_reg_")

    assert (await try_register(client, "limited1", token=token)).status_code == 201
    assert (await try_register(client, "limited2", token=token)).status_code == 201
    r = await try_register(client, "limited3", token=token)
    assert 400 <= r.status_code < 500
    assert_error(r, r.status_code, "M_FORBIDDEN")
    assert not await agent_exists(app, uid("limited3"))
    # Humans draw on the same tokens.
    r = await client.post(
        "/api/v1/humans",
        json={"email": "late@example.com", "password": PASSWORD, "registration_token": token},
    )
    assert 400 <= r.status_code < 500, r.text
    assert_error(r, r.status_code, "M_FORBIDDEN")


async def test_failed_registration_does_not_consume_a_token_use(app_env):
    client = app_env["client"]
    admin = await admin_login(client, app_env["first"])
    token = (await mint_registration_token(client, admin, uses_allowed=1))["token"]
    await register(client, "taken", app_env["token"])
    # A taken handle, a bad key and a bad handle all fail before the token is spent.
    assert_error(await try_register(client, "TAKEN", token=token), 409, "M_USER_IN_USE")
    r = await client.post(
        "/api/v1/agents", json={"handle": "keyless", "public_key": "AAAA", "registration_token": token}
    )
    assert_error(r, 400)
    assert_error(await try_register(client, "x", token=token), 400, "M_INVALID_USERNAME")
    assert (await try_register(client, "fresh", token=token)).status_code == 201
    assert (await try_register(client, "fresh2", token=token)).status_code in (401, 403)


async def test_expired_registration_token_is_rejected(settings_for):
    clock = FrozenClock()
    async with running(settings_for(), clock=clock) as (app, client, _announced):
        first = app.state.first_start
        admin = await admin_login(client, first)
        token = (await mint_registration_token(client, admin, expires_in=60))["token"]
        assert (await try_register(client, "early", token=token)).status_code == 201
        clock.advance(61)
        admin = await admin_login(client, first)
        r = await try_register(client, "late", token=token)
        assert 400 <= r.status_code < 500
        assert_error(r, r.status_code, "M_FORBIDDEN")
        assert not await agent_exists(app, uid("late"))
        # The first-start token never expires.
        assert (await try_register(client, "late", token=first.registration_token)).status_code == 201


async def test_open_mode_needs_no_token(settings_for):
    async with running(settings_for(registration="open")) as (app, client, _):
        r = await try_register(client, "opener")
        assert r.status_code == 201, r.text
        assert r.json()["user_id"] == uid("opener")
        assert await agent_exists(app, uid("opener"))
        r = await client.post("/api/v1/humans", json={"email": "open@example.com", "password": PASSWORD})
        assert r.status_code == 201, r.text


async def test_closed_mode_rejects_everyone(settings_for):
    async with running(settings_for(registration="closed")) as (app, client, _):
        first = app.state.first_start
        agents_before = await count_rows(app, tables.agents)
        humans_before = await count_rows(app, tables.humans)
        for token in (None, first.registration_token):
            assert_error(await try_register(client, "closer", token=token), 403, "M_FORBIDDEN")
            r = await client.post(
                "/api/v1/humans",
                json={"email": "closed@example.com", "password": PASSWORD, "registration_token": token},
            )
            assert_error(r, 403, "M_FORBIDDEN")
        assert await count_rows(app, tables.agents) == agents_before
        assert await count_rows(app, tables.humans) == humans_before
        # The admin still logs in, and admin-minted static tokens still work for existing agents.
        await admin_login(client, first)


# ---------------------------------------------------------------- handles


@pytest.mark.parametrize("handle", ["abc", "a" * 32, "a.b", "a_b", "a-b", "007", "x.y_z-9"])
async def test_valid_handles(client, reg_token, handle):
    r = await try_register(client, handle, token=reg_token)
    assert r.status_code == 201, r.text
    assert r.json()["user_id"] == uid(handle)
    assert r.json()["handle"] == handle


@pytest.mark.parametrize(
    "handle",
    ["ab", "", "a" * 33, "has space", "bad!", "a/b", "a@b", "a:b", "émile", "tab\there", "#room", "@x:y"],
)
async def test_invalid_handles(app_env, handle):
    client, app = app_env["client"], app_env["app"]
    before = await count_rows(app, tables.agents)
    r = await try_register(client, handle, token=app_env["token"])
    assert_error(r, 400, "M_INVALID_USERNAME")
    assert await count_rows(app, tables.agents) == before


@pytest.mark.parametrize("handle", ["admin", "system", "market", "moderator", "ADMIN", "Root", "support"])
async def test_reserved_handles(app_env, handle):
    client, app = app_env["client"], app_env["app"]
    before = await count_rows(app, tables.agents)
    r = await try_register(client, handle, token=app_env["token"])
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["errcode"] in ("M_EXCLUSIVE", "M_INVALID_USERNAME", "M_USER_IN_USE")
    assert await count_rows(app, tables.agents) == before


async def test_handles_are_unique_case_insensitively_and_user_ids_lowercase(app_env):
    client, app = app_env["client"], app_env["app"]
    r = await try_register(client, "Alice", token=app_env["token"])
    assert r.status_code == 201, r.text
    assert r.json()["user_id"] == uid("alice")
    assert r.json()["handle"] == "alice"
    before = await count_rows(app, tables.agents)
    for variant in ("alice", "ALICE", "aLiCe"):
        assert_error(await try_register(client, variant, token=app_env["token"]), 409, "M_USER_IN_USE")
    assert await count_rows(app, tables.agents) == before


async def test_handle_change_is_unique_keeps_old_handle_and_is_audited(app_env):
    client, app = app_env["client"], app_env["app"]
    token = app_env["token"]
    alice = await register(client, "alice", token)
    bob = await register(client, "bob", token)

    r = await client.patch("/api/v1/agents/me", headers=alice.headers, json={"handle": "Alice-Two"})
    assert r.status_code == 200, r.text
    assert r.json()["handle"] == "alice-two"
    assert r.json()["user_id"] == alice.user_id  # the user id is stable

    # Both the new and the old handle resolve to the same agent, by user id or bare handle.
    for ref in (uid("alice-two"), "alice-two", alice.user_id, "alice"):
        r = await client.get(f"/api/v1/agents/{path_part(ref)}", headers=bob.headers)
        assert r.status_code == 200, (ref, r.text)
        assert r.json()["user_id"] == alice.user_id
        assert r.json()["handle"] == "alice-two"
    r = await client.post("/api/v1/auth/challenge", json={"user_id": uid("alice-two")})
    assert r.status_code == 200, r.text
    nonce = r.json()["nonce"]
    r = await client.post(
        "/api/v1/auth/login",
        json={"user_id": uid("alice-two"), "nonce": nonce, "signature": sign(alice.key, nonce)},
    )
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == alice.user_id

    # Nobody else can take the old handle, in any case, by registering or renaming.
    assert_error(await try_register(client, "alice", token=token), 409, "M_USER_IN_USE")
    assert_error(await try_register(client, "ALICE-TWO", token=token), 409, "M_USER_IN_USE")
    for taken in ("alice", "ALICE", "Alice-Two"):
        r = await client.patch("/api/v1/agents/me", headers=bob.headers, json={"handle": taken})
        assert_error(r, 409, "M_USER_IN_USE")
    r = await client.get("/api/v1/agents/me", headers=bob.headers)
    assert r.json()["handle"] == "bob"
    # Bob "changing" to his own handle in another case is a no-op.
    r = await client.patch("/api/v1/agents/me", headers=bob.headers, json={"handle": "BOB"})
    assert r.status_code == 200 and r.json()["handle"] == "bob"
    # Invalid and reserved handles are refused on change too.
    for bad in ("x", "admin", "bad handle"):
        r = await client.patch("/api/v1/agents/me", headers=alice.headers, json={"handle": bad})
        assert 400 <= r.status_code < 500 and r.json()["errcode"], r.text
    # The owner may go back to a former handle.
    r = await client.patch("/api/v1/agents/me", headers=alice.headers, json={"handle": "alice"})
    assert r.status_code == 200, r.text
    assert r.json()["handle"] == "alice"

    async with app.state.services.db.read() as conn:
        rows = (
            await conn.execute(
                select(tables.audit_log).where(tables.audit_log.c.action == "agent.handle_change")
            )
        ).all()
        intact, count = await verify_chain(conn)
    assert [(r.actor, r.target) for r in rows] == [(alice.user_id, alice.user_id)] * 2
    assert '"to":"alice-two"' in rows[0].details and '"from":"alice"' in rows[0].details
    assert intact and count >= 4


async def test_audit_chain_detects_tampering(app_env):
    client, app = app_env["client"], app_env["app"]
    alice = await register(client, "alice", app_env["token"])
    r = await client.patch("/api/v1/agents/me", headers=alice.headers, json={"handle": "alice2"})
    assert r.status_code == 200
    db = app.state.services.db
    async with db.read() as conn:
        assert (await verify_chain(conn))[0]
    async with db.write() as conn:
        await conn.execute(
            tables.audit_log.update()
            .where(tables.audit_log.c.action == "agent.handle_change")
            .values(details='{"from":"alice","to":"mallory"}')
        )
    async with db.read() as conn:
        intact, _ = await verify_chain(conn)
    assert not intact


# ---------------------------------------------------------------- challenge login


async def test_challenge_login_issues_tokens(client, reg_token):
    alice = await register(client, "alice", reg_token)
    r = await client.post("/api/v1/auth/challenge", json={"user_id": alice.user_id})
    assert r.status_code == 200
    nonce, expires_at = r.json()["nonce"], r.json()["expires_at"]
    assert isinstance(nonce, str) and len(nonce) >= 16 and isinstance(expires_at, int)
    r = await client.post(
        "/api/v1/auth/login",
        json={"user_id": alice.user_id, "nonce": nonce, "signature": sign(alice.key, nonce)},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_in"] == 900
    assert body["access_token"] and body["refresh_token"] and body["access_token"] != body["refresh_token"]
    r = await whoami(client, body["access_token"])
    assert r.status_code == 200 and r.json()["user_id"] == alice.user_id and r.json()["kind"] == "agent"


async def test_challenge_login_failures(settings_for):
    clock = FrozenClock()
    async with running(settings_for(), clock=clock) as (app, client, _):
        token = app.state.first_start.registration_token
        alice = await register(client, "alice", token)
        bob = await register(client, "bob", token)
        mallory_key, _ = new_keypair()

        async def challenge(user_id: str) -> str:
            r = await client.post("/api/v1/auth/challenge", json={"user_id": user_id})
            assert r.status_code == 200, r.text
            return str(r.json()["nonce"])

        async def attempt(user_id: str, nonce: str, signature: str) -> httpx.Response:
            return await client.post(
                "/api/v1/auth/login", json={"user_id": user_id, "nonce": nonce, "signature": signature}
            )

        sessions_before = await count_rows(app, tables.sessions)

        # forged: signed with another key
        nonce = await challenge(alice.user_id)
        assert_error(await attempt(alice.user_id, nonce, sign(mallory_key, nonce)), 403, "M_FORBIDDEN")
        # the forged attempt burned the nonce: even the right signature is refused now
        assert_error(await attempt(alice.user_id, nonce, sign(alice.key, nonce)), 403, "M_FORBIDDEN")

        # signed the wrong message
        nonce = await challenge(alice.user_id)
        assert_error(await attempt(alice.user_id, nonce, sign(alice.key, nonce + "x")), 403, "M_FORBIDDEN")

        # replay: a nonce works once
        nonce = await challenge(alice.user_id)
        assert (await attempt(alice.user_id, nonce, sign(alice.key, nonce))).status_code == 200
        sessions_after_ok = await count_rows(app, tables.sessions)
        assert sessions_after_ok == sessions_before + 1
        assert_error(await attempt(alice.user_id, nonce, sign(alice.key, nonce)), 403, "M_FORBIDDEN")

        # expired
        nonce = await challenge(alice.user_id)
        clock.advance(app_settings_ttl(app) + 1)
        assert_error(await attempt(alice.user_id, nonce, sign(alice.key, nonce)), 403, "M_FORBIDDEN")
        # just before expiry it still works
        nonce = await challenge(alice.user_id)
        clock.advance(app_settings_ttl(app) - 1)
        assert (await attempt(alice.user_id, nonce, sign(alice.key, nonce))).status_code == 200
        sessions_after_ok += 1

        # a nonce issued for bob is no use to alice, even correctly signed by alice
        nonce = await challenge(bob.user_id)
        assert_error(await attempt(alice.user_id, nonce, sign(alice.key, nonce)), 403, "M_FORBIDDEN")
        # ... and bob's nonce signed by alice's key is no use to bob
        assert_error(await attempt(bob.user_id, nonce, sign(alice.key, nonce)), 403, "M_FORBIDDEN")

        # a nonce that was never issued
        assert_error(await attempt(alice.user_id, "clawlist-login:made-up", sign(alice.key, "x")), 403)

        # unknown user
        r = await client.post("/api/v1/auth/challenge", json={"user_id": uid("nobody")})
        assert_error(r, 404, "M_NOT_FOUND")
        r = await attempt(uid("nobody"), nonce, sign(alice.key, nonce))
        assert_error(r, 404, "M_NOT_FOUND")

        assert await count_rows(app, tables.sessions) == sessions_after_ok


def app_settings_ttl(app: FastAPI) -> int:
    return int(app.state.settings.challenge_ttl_seconds)


# ---------------------------------------------------------------- access and refresh tokens


async def test_access_token_expires_after_15_minutes(settings_for):
    clock = FrozenClock()
    async with running(settings_for(), clock=clock) as (app, client, _):
        alice = await register(client, "alice", app.state.first_start.registration_token)
        assert (await whoami(client, alice.access_token)).status_code == 200
        clock.advance(899)
        assert (await whoami(client, alice.access_token)).status_code == 200
        clock.advance(2)
        assert_error(await whoami(client, alice.access_token), 401, "M_UNKNOWN_TOKEN")
        # the refresh token still gets a fresh access token
        r = await client.post("/api/v1/auth/refresh", json={"refresh_token": alice.refresh_token})
        assert r.status_code == 200, r.text
        assert r.json()["expires_in"] == 900
        assert (await whoami(client, r.json()["access_token"])).status_code == 200


async def test_refresh_rotates_and_reuse_revokes_the_family(client, reg_token):
    alice = await register(client, "alice", reg_token)
    first_refresh = alice.refresh_token

    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": first_refresh})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first_refresh
    assert second["user_id"] == alice.user_id
    assert (await whoami(client, second["access_token"])).status_code == 200

    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert r.status_code == 200, r.text
    third = r.json()
    assert (await whoami(client, third["access_token"])).status_code == 200

    # An old refresh token comes back: it leaked. The whole family dies.
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": first_refresh})
    assert_error(r, 401, "M_UNKNOWN_TOKEN")
    assert_error(await whoami(client, third["access_token"]), 401, "M_UNKNOWN_TOKEN")
    assert_error(await whoami(client, alice.access_token), 401, "M_UNKNOWN_TOKEN")
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": third["refresh_token"]})
    assert_error(r, 401, "M_UNKNOWN_TOKEN")

    # Another session of the same agent is unaffected.
    other = Agent(alice.user_id, alice.key, alice.public_key)
    await login(client, other)
    assert (await whoami(client, other.access_token)).status_code == 200


async def test_refresh_token_reuse_is_audited(app_env):
    client, app = app_env["client"], app_env["app"]
    alice = await register(client, "alice", app_env["token"])
    assert (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": alice.refresh_token})
    ).status_code == 200
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert r.status_code == 401
    async with app.state.services.db.read() as conn:
        rows = (
            await conn.execute(select(tables.audit_log).where(tables.audit_log.c.action == "session.revoked"))
        ).all()
        intact, _ = await verify_chain(conn)
    assert len(rows) == 1 and rows[0].actor == alice.user_id
    assert intact


async def test_refresh_token_expires(settings_for):
    clock = FrozenClock()
    async with running(settings_for(refresh_token_ttl_seconds=3600), clock=clock) as (app, client, _):
        alice = await register(client, "alice", app.state.first_start.registration_token)
        clock.advance(3601)
        r = await client.post("/api/v1/auth/refresh", json={"refresh_token": alice.refresh_token})
        assert_error(r, 401, "M_UNKNOWN_TOKEN")


async def test_logout_revokes_this_session_only(client, reg_token):
    alice = await register(client, "alice", reg_token)
    other = Agent(alice.user_id, alice.key, alice.public_key)
    await login(client, other)
    r = await client.post("/api/v1/auth/logout", headers=alice.headers)
    assert r.status_code == 200, r.text
    assert_error(await whoami(client, alice.access_token), 401, "M_UNKNOWN_TOKEN")
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert_error(r, 401, "M_UNKNOWN_TOKEN")
    assert (await whoami(client, other.access_token)).status_code == 200


async def test_logout_all_revokes_every_session(app_env):
    client = app_env["client"]
    alice = await register(client, "alice", app_env["token"])
    bob = await register(client, "bob", app_env["token"])
    second = Agent(alice.user_id, alice.key, alice.public_key)
    await login(client, second)
    admin = await admin_login(client, app_env["first"])
    r = await client.post(
        f"/api/v1/admin/agents/{path_part(alice.user_id)}/tokens", headers=bearer(admin), json={}
    )
    static = r.json()["access_token"]
    assert (await whoami(client, static)).status_code == 200

    r = await client.post("/api/v1/auth/logout/all", headers=second.headers)
    assert r.status_code == 200, r.text
    assert r.json()["revoked"] == 3
    for token in (alice.access_token, second.access_token, static):
        assert_error(await whoami(client, token), 401, "M_UNKNOWN_TOKEN")
    for refresh in (alice.refresh_token, second.refresh_token):
        r = await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
        assert_error(r, 401, "M_UNKNOWN_TOKEN")
    assert (await whoami(client, bob.access_token)).status_code == 200


# ---------------------------------------------------------------- static tokens


async def test_admin_mints_long_lived_tokens_agents_cannot(settings_for):
    clock = FrozenClock()
    async with running(settings_for(), clock=clock) as (app, client, _):
        first = app.state.first_start
        alice = await register(client, "alice", first.registration_token)
        bob = await register(client, "bob", first.registration_token)
        admin = await admin_login(client, first)

        r = await client.post(
            f"/api/v1/admin/agents/{path_part(alice.user_id)}/tokens",
            headers=bearer(admin),
            json={"label": "my bot"},
        )
        assert r.status_code == 201, r.text
        static = r.json()["access_token"]
        assert r.json()["user_id"] == alice.user_id
        assert "refresh_token" not in r.json() and "expires_in" not in r.json()
        r = await whoami(client, static)
        assert r.status_code == 200 and r.json()["user_id"] == alice.user_id
        # bare handles work too
        r = await client.post("/api/v1/admin/agents/bob/tokens", headers=bearer(admin), json={})
        assert r.status_code == 201 and r.json()["user_id"] == bob.user_id

        # long-lived: still valid long after access tokens expire
        clock.advance(30 * 86400)
        assert (await whoami(client, static)).status_code == 200
        assert (await whoami(client, alice.access_token)).status_code == 401
        room = (await client.post("/api/v1/rooms", headers=bearer(static), json={"name": "x"})).json()[
            "room_id"
        ]
        await send(client, Agent(alice.user_id, alice.key, alice.public_key, access_token=static), room, "hi")

        sessions_before = await count_rows(app, tables.static_tokens)
        await login(client, bob)
        admin = await admin_login(client, first)
        for user in (alice.user_id, bob.user_id):
            r = await client.post(
                f"/api/v1/admin/agents/{path_part(user)}/tokens", headers=bob.headers, json={}
            )
            assert_error(r, 403, "M_FORBIDDEN")
        r = await client.post(f"/api/v1/admin/agents/{path_part(bob.user_id)}/tokens", json={})
        assert_error(r, 401, "M_MISSING_TOKEN")
        r = await client.post(
            f"/api/v1/admin/agents/{path_part(uid('nobody'))}/tokens", headers=bearer(admin), json={}
        )
        assert_error(r, 404, "M_NOT_FOUND")
        assert await count_rows(app, tables.static_tokens) == sessions_before

        # logging out a static token revokes it
        assert (await client.post("/api/v1/auth/logout", headers=bearer(static))).status_code == 200
        assert_error(await whoami(client, static), 401, "M_UNKNOWN_TOKEN")


# ---------------------------------------------------------------- agent passwords


async def test_agent_password_login_by_user_id_and_handle(client, reg_token):
    alice = await register(client, "alice", reg_token)
    r = await client.put("/api/v1/agents/me/password", headers=alice.headers, json={"password": "short"})
    assert_error(r, 400, "M_WEAK_PASSWORD")
    r = await client.post("/api/v1/auth/password", json={"user": alice.user_id, "password": "short"})
    assert_error(r, 403, "M_FORBIDDEN")

    r = await client.put("/api/v1/agents/me/password", headers=alice.headers, json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    r = await client.get("/api/v1/agents/me", headers=alice.headers)
    assert r.json()["has_password"] is True

    for user in (alice.user_id, "alice", "ALICE"):
        r = await client.post("/api/v1/auth/password", json={"user": user, "password": PASSWORD})
        assert r.status_code == 200, (user, r.text)
        assert r.json()["user_id"] == alice.user_id
        assert r.json()["expires_in"] == 900 and r.json()["refresh_token"]
        me = await whoami(client, r.json()["access_token"])
        assert me.status_code == 200 and me.json()["user_id"] == alice.user_id

    wrong = await client.post("/api/v1/auth/password", json={"user": "alice", "password": PASSWORD + "!"})
    unknown = await client.post("/api/v1/auth/password", json={"user": "nobody", "password": PASSWORD})
    unknown_id = await client.post(
        "/api/v1/auth/password", json={"user": uid("nobody"), "password": PASSWORD}
    )
    other_server = await client.post(
        "/api/v1/auth/password", json={"user": "@alice:elsewhere", "password": PASSWORD}
    )
    no_password = await register(client, "bob", reg_token)
    keyonly = await client.post(
        "/api/v1/auth/password", json={"user": no_password.user_id, "password": PASSWORD}
    )
    for r in (wrong, unknown, unknown_id, other_server, keyonly):
        assert_error(r, 403, "M_FORBIDDEN")
        assert r.json() == wrong.json()


async def test_agent_registered_with_password_only(client, reg_token):
    r = await client.post(
        "/api/v1/agents", json={"handle": "matrixbot", "password": PASSWORD, "registration_token": reg_token}
    )
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/auth/password", json={"user": "matrixbot", "password": PASSWORD})
    assert r.status_code == 200, r.text
    # No key: challenge login is refused, clearly.
    r = await client.post("/api/v1/auth/challenge", json={"user_id": uid("matrixbot")})
    assert_error(r, 403, "M_FORBIDDEN")
    # Neither a key nor a password: refused.
    r = await client.post("/api/v1/agents", json={"handle": "ghost", "registration_token": reg_token})
    assert_error(r, 400)


# ---------------------------------------------------------------- humans


async def test_human_registration_and_roles(app_env):
    client, app = app_env["client"], app_env["app"]
    token = app_env["token"]
    owner = await create_human(client, token, "Owner@Example.com", "owner")
    assert owner["email"] == "owner@example.com" and owner["role"] == "owner"
    assert owner["human_id"].startswith("h_")
    r = await client.get("/api/v1/humans/me", headers=bearer(owner["access_token"]))
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "owner" and r.json()["agents"] == []
    # email login is case-insensitive
    r = await client.post("/api/v1/auth/password", json={"user": "OWNER@example.com", "password": PASSWORD})
    assert r.status_code == 200, r.text

    humans_before = await count_rows(app, tables.humans)
    for email in ("owner@example.com", "OWNER@EXAMPLE.COM"):
        r = await client.post(
            "/api/v1/humans", json={"email": email, "password": PASSWORD, "registration_token": token}
        )
        assert_error(r, 409, "M_USER_IN_USE")
    for role in ("admin", "moderator", "superuser"):
        r = await client.post(
            "/api/v1/humans",
            json={
                "email": f"{role}@example.com",
                "password": PASSWORD,
                "role": role,
                "registration_token": token,
            },
        )
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["errcode"]
    for email in ("not-an-email", "a@b@c", "", "@example.com"):
        r = await client.post(
            "/api/v1/humans", json={"email": email, "password": PASSWORD, "registration_token": token}
        )
        assert_error(r, 400)
    r = await client.post(
        "/api/v1/humans", json={"email": "weak@example.com", "password": "short", "registration_token": token}
    )
    assert_error(r, 400, "M_WEAK_PASSWORD")
    assert await count_rows(app, tables.humans) == humans_before

    # wrong password and unknown email: one message
    wrong = await client.post(
        "/api/v1/auth/password", json={"user": "owner@example.com", "password": "x" * 12}
    )
    unknown = await client.post(
        "/api/v1/auth/password", json={"user": "who@example.com", "password": "x" * 12}
    )
    assert_error(wrong, 403, "M_FORBIDDEN")
    assert wrong.json() == unknown.json()

    # Only the admin sets roles.
    observer = await create_human(client, token, "watcher@example.com", "observer")
    alice = await register(client, "alice", token)
    path = f"/api/v1/admin/humans/{observer['human_id']}/role"
    for headers in (bearer(owner["access_token"]), bearer(observer["access_token"]), alice.headers):
        assert_error(await client.put(path, headers=headers, json={"role": "admin"}), 403, "M_FORBIDDEN")
    async with app.state.services.db.read() as conn:
        role = (
            await conn.execute(
                select(tables.humans.c.role).where(tables.humans.c.human_id == observer["human_id"])
            )
        ).scalar_one()
    assert role == "observer"

    admin = await admin_login(client, app_env["first"])
    r = await client.put(path, headers=bearer(admin), json={"role": "moderator"})
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "moderator"
    r = await client.put(path, headers=bearer(admin), json={"role": "emperor"})
    assert_error(r, 400)
    r = await client.put("/api/v1/admin/humans/h_nobody/role", headers=bearer(admin), json={"role": "owner"})
    assert_error(r, 404, "M_NOT_FOUND")
    # A fresh login sees the new role.
    r = await client.post("/api/v1/auth/password", json={"user": "watcher@example.com", "password": PASSWORD})
    me = await whoami(client, r.json()["access_token"])
    assert me.json()["role"] == "moderator" and me.json()["scope"] == "full"


async def test_observers_are_read_only_but_read_world_readable_rooms(app_env):
    client, app = app_env["client"], app_env["app"]
    token = app_env["token"]
    alice = await register(client, "alice", token)
    market = f"#market:{SERVER}"
    r = await client.post(f"/api/v1/rooms/{path_part(market)}/join", headers=alice.headers)
    assert r.status_code == 200, r.text
    market_id = r.json()["room_id"]
    event_id = await send(client, alice, market_id, "selling a lamp")

    observer = await create_human(client, token, "watcher@example.com", "observer")
    headers = bearer(observer["access_token"])
    me = await whoami(client, observer["access_token"])
    assert me.json()["scope"] == "read" and me.json()["kind"] == "human"

    for ref in (market, market_id):
        r = await client.get(f"/api/v1/rooms/{path_part(ref)}/messages", headers=headers, params={"dir": "b"})
        assert r.status_code == 200, r.text
        assert event_id in [e["event_id"] for e in r.json()["chunk"]]

    async def message_count() -> int:
        async with app.state.services.db.read() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count())
                        .select_from(tables.events)
                        .where(tables.events.c.room_id == market_id)
                    )
                ).scalar_one()
            )

    before = await message_count()
    rooms_before = await count_rows(app, tables.rooms)
    r = await client.post(
        f"/api/v1/rooms/{path_part(market_id)}/messages", headers=headers, json={"txn_id": "o1", "body": "hi"}
    )
    assert_error(r, 403, "M_FORBIDDEN")
    r = await client.post(f"/api/v1/rooms/{path_part(market_id)}/join", headers=headers)
    assert_error(r, 403, "M_FORBIDDEN")
    r = await client.post("/api/v1/rooms", headers=headers, json={"name": "mine"})
    assert_error(r, 403, "M_FORBIDDEN")
    r = await client.post("/api/v1/dms", headers=headers, json={"user_id": alice.user_id})
    assert_error(r, 403, "M_FORBIDDEN")
    r = await client.patch("/api/v1/agents/me", headers=headers, json={"handle": "sneaky"})
    assert_error(r, 403, "M_FORBIDDEN")
    r = await client.post("/api/v1/agents/me/claim-code", headers=headers)
    assert_error(r, 403, "M_FORBIDDEN")
    assert await message_count() == before
    assert await count_rows(app, tables.rooms) == rooms_before

    # A private room's history is not theirs to read.
    private = (await client.post("/api/v1/rooms", headers=alice.headers, json={"name": "secret"})).json()[
        "room_id"
    ]
    await send(client, alice, private, "for members only")
    r = await client.get(f"/api/v1/rooms/{path_part(private)}/messages", headers=headers)
    assert_error(r, 403, "M_FORBIDDEN")


async def test_owner_claims_an_agent_with_a_one_time_code(app_env):
    client = app_env["client"]
    token = app_env["token"]
    alice = await register(client, "alice", token)
    bob = await register(client, "bob", token)
    owner = await create_human(client, token, "owner@example.com", "owner")
    rival = await create_human(client, token, "rival@example.com", "owner")
    observer = await create_human(client, token, "watcher@example.com", "observer")

    r = await client.post("/api/v1/agents/me/claim-code", headers=alice.headers)
    assert r.status_code == 200, r.text
    code = r.json()["code"]
    assert isinstance(r.json()["expires_at"], int)

    # observers and agents cannot claim; a wrong code does nothing
    r = await client.post(
        "/api/v1/humans/me/claims", headers=bearer(observer["access_token"]), json={"code": code}
    )
    assert_error(r, 403, "M_FORBIDDEN")
    r = await client.post("/api/v1/humans/me/claims", headers=bob.headers, json={"code": code})
    assert_error(r, 403, "M_FORBIDDEN")
    r = await client.post(
        "/api/v1/humans/me/claims", headers=bearer(owner["access_token"]), json={"code": code + "x"}
    )
    assert_error(r, 403, "M_FORBIDDEN")
    r = await client.get(f"/api/v1/agents/{path_part(alice.user_id)}", headers=bob.headers)
    assert r.json()["owner"] is None

    r = await client.post(
        "/api/v1/humans/me/claims", headers=bearer(owner["access_token"]), json={"code": code}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"user_id": alice.user_id, "owner": owner["human_id"]}

    # single use, even for someone else
    for who in (owner, rival):
        r = await client.post(
            "/api/v1/humans/me/claims", headers=bearer(who["access_token"]), json={"code": code}
        )
        assert_error(r, 403, "M_FORBIDDEN")

    r = await client.get(f"/api/v1/agents/{path_part(alice.user_id)}", headers=bob.headers)
    assert r.status_code == 200
    assert r.json()["owner"]["human_id"] == owner["human_id"]
    r = await client.get(
        f"/api/v1/agents/{path_part(alice.user_id)}", headers=bearer(observer["access_token"])
    )
    assert r.status_code == 200 and r.json()["owner"]["human_id"] == owner["human_id"]
    listed = (await client.get("/api/v1/agents", headers=bob.headers)).json()["agents"]
    assert {a["user_id"]: a["owner"] for a in listed}[alice.user_id]["human_id"] == owner["human_id"]
    r = await client.get("/api/v1/humans/me", headers=bearer(owner["access_token"]))
    assert r.json()["agents"] == [alice.user_id]
    r = await client.get("/api/v1/humans/me", headers=bearer(rival["access_token"]))
    assert r.json()["agents"] == []
    r = await client.get("/api/v1/humans/me", headers=alice.headers)
    assert_error(r, 403, "M_FORBIDDEN")


async def test_role_changes_apply_to_live_sessions(app_env):
    client = app_env["client"]
    token = app_env["token"]
    alice = await register(client, "alice", token)
    watcher = await create_human(client, token, "watcher@example.com", "observer")
    headers = bearer(watcher["access_token"])
    admin = await admin_login(client, app_env["first"])
    role_path = f"/api/v1/admin/humans/{watcher['human_id']}/role"

    code = (await client.post("/api/v1/agents/me/claim-code", headers=alice.headers)).json()["code"]
    r = await client.post("/api/v1/humans/me/claims", headers=headers, json={"code": code})
    assert_error(r, 403, "M_FORBIDDEN")

    # Promoted to owner: the same token may now claim.
    assert (await client.put(role_path, headers=bearer(admin), json={"role": "owner"})).status_code == 200
    me = await whoami(client, watcher["access_token"])
    assert me.json()["role"] == "owner" and me.json()["scope"] == "full"
    r = await client.post("/api/v1/humans/me/claims", headers=headers, json={"code": code})
    assert r.status_code == 200, r.text

    # Demoted to observer: the same token is read-only again at once.
    assert (await client.put(role_path, headers=bearer(admin), json={"role": "observer"})).status_code == 200
    me = await whoami(client, watcher["access_token"])
    assert me.json()["role"] == "observer" and me.json()["scope"] == "read"
    code = (await client.post("/api/v1/agents/me/claim-code", headers=alice.headers)).json()["code"]
    r = await client.post("/api/v1/humans/me/claims", headers=headers, json={"code": code})
    assert_error(r, 403, "M_FORBIDDEN")
    # An admin who steps down to owner loses the admin commands at once.
    r = await client.put(role_path, headers=bearer(admin), json={"role": "admin"})
    assert r.status_code == 200
    r = await client.put(role_path, headers=headers, json={"role": "owner"})
    assert r.status_code == 200, r.text
    r = await client.put(role_path, headers=headers, json={"role": "admin"})
    assert_error(r, 403, "M_FORBIDDEN")


async def test_claim_code_expires(settings_for):
    clock = FrozenClock()
    async with running(settings_for(), clock=clock) as (app, client, _):
        token = app.state.first_start.registration_token
        alice = await register(client, "alice", token)
        code = (await client.post("/api/v1/agents/me/claim-code", headers=alice.headers)).json()["code"]
        clock.advance(app.state.settings.claim_code_ttl_seconds + 1)
        owner = await create_human(client, token, "owner@example.com", "owner")
        r = await client.post(
            "/api/v1/humans/me/claims", headers=bearer(owner["access_token"]), json={"code": code}
        )
        assert_error(r, 403, "M_FORBIDDEN")
        r = await client.get("/api/v1/humans/me", headers=bearer(owner["access_token"]))
        assert r.json()["agents"] == []


# ---------------------------------------------------------------- secrets at rest and in logs


async def all_stored_text(app: FastAPI) -> str:
    """Every value of every row of every table, as text."""
    parts: list[str] = []
    async with app.state.services.db.read() as conn:
        for table in tables.metadata.sorted_tables:
            for row in (await conn.execute(select(table))).all():
                for value in row:
                    if isinstance(value, bytes):
                        parts.append(value.decode("latin-1"))
                        parts.append(base64.b64encode(value).decode())
                    else:
                        parts.append(str(value))
    return "\n".join(parts)


async def test_secrets_are_stored_only_as_hashes(app_env, caplog):
    caplog.set_level(logging.DEBUG)
    client, app = app_env["client"], app_env["app"]
    first = app_env["first"]
    secrets: list[str] = [first.registration_token, first.admin_password]

    admin = await admin_login(client, first)
    secrets.append(admin)
    minted = await mint_registration_token(client, admin, uses_allowed=5)
    secrets.append(minted["token"])
    alice = await register(client, "alice", minted["token"])
    secrets += [alice.access_token, alice.refresh_token]
    r = await client.post("/api/v1/auth/challenge", json={"user_id": alice.user_id})
    nonce = r.json()["nonce"]
    secrets.append(nonce)
    r = await client.post(
        "/api/v1/auth/login",
        json={"user_id": alice.user_id, "nonce": nonce, "signature": sign(alice.key, nonce)},
    )
    secrets += [r.json()["access_token"], r.json()["refresh_token"]]
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": r.json()["refresh_token"]})
    secrets += [r.json()["access_token"], r.json()["refresh_token"]]
    unused = (await client.post("/api/v1/auth/challenge", json={"user_id": alice.user_id})).json()["nonce"]
    secrets.append(unused)
    r = await client.post(
        f"/api/v1/admin/agents/{path_part(alice.user_id)}/tokens", headers=bearer(admin), json={}
    )
    secrets.append(r.json()["access_token"])
    r = await client.put("/api/v1/agents/me/password", headers=alice.headers, json={"password": PASSWORD})
    assert r.status_code == 200
    secrets.append(PASSWORD)
    r = await client.post("/api/v1/auth/password", json={"user": "alice", "password": PASSWORD})
    secrets += [r.json()["access_token"], r.json()["refresh_token"]]
    human_password = "another long human password"
    r = await client.post(
        "/api/v1/humans",
        json={
            "email": "owner@example.com",
            "password": human_password,
            "registration_token": minted["token"],
        },
    )
    assert r.status_code == 201
    secrets.append(human_password)
    r = await client.post(
        "/api/v1/auth/password", json={"user": "owner@example.com", "password": human_password}
    )
    owner_token = r.json()["access_token"]
    secrets += [owner_token, r.json()["refresh_token"]]
    code = (await client.post("/api/v1/agents/me/claim-code", headers=alice.headers)).json()["code"]
    unused_code = (await client.post("/api/v1/agents/me/claim-code", headers=alice.headers)).json()["code"]
    secrets += [code, unused_code]
    r = await client.post("/api/v1/humans/me/claims", headers=bearer(owner_token), json={"code": code})
    assert r.status_code == 200
    # failures log nothing secret either
    await client.post("/api/v1/auth/password", json={"user": "alice", "password": "wrong " + PASSWORD})
    await whoami(client, "garbage-token-" + alice.access_token[-10:])

    assert all(isinstance(s, str) and len(s) >= 10 for s in secrets)
    stored = await all_stored_text(app)
    for secret in secrets:
        assert secret not in stored, f"a secret is stored in plain text: {secret[:12]}..."

    settings = app_env["settings"]
    if settings.db_url.startswith("sqlite"):
        db_file = Path(settings.data_dir) / "clawlist.db"
        raw = b"".join(p.read_bytes() for p in (db_file, db_file.with_name("clawlist.db-wal")) if p.exists())
        assert raw
        for secret in secrets:
            assert secret.encode() not in raw, f"a secret is in the database file: {secret[:12]}..."

    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    for secret in secrets:
        assert secret not in logged, f"a secret was logged: {secret[:12]}..."


# ---------------------------------------------------------------- first start


async def test_first_start_announces_credentials_once(settings_for):
    settings = settings_for()
    async with running(settings) as (app, client, announced):
        first = app.state.first_start
        assert first is not None
        assert len(announced) == 1
        text = announced[0]
        assert first.admin_email in text and first.admin_password in text
        assert text.count(first.registration_token) >= 1
        # the announced credentials work
        await admin_login(client, first)
        assert (await try_register(client, "alice", token=first.registration_token)).status_code == 201

    async with running(settings) as (app2, client2, announced2):
        assert announced2 == []
        assert app2.state.first_start is None
        # same data, same credentials
        await admin_login(client2, first)
        r = await client2.get(
            f"/api/v1/directory/{path_part('#market:' + SERVER)}",
            headers=bearer(await admin_login(client2, first)),
        )
        assert r.status_code == 200, r.text
        assert await agent_exists(app2, uid("alice"))
        assert await count_rows(app2, tables.humans) == 1
        assert await count_rows(app2, tables.registration_tokens) == 1


async def test_app_env_announced_once(app_env):
    announced = app_env["announced"]
    first = app_env["first"]
    assert len(announced) == 1
    assert first.admin_password in announced[0]
    assert first.registration_token in announced[0]
    assert first.admin_email in announced[0]


# ---------------------------------------------------------------- races: single use under concurrency


async def test_single_use_secrets_hold_under_concurrency(app_env):
    client, app = app_env["client"], app_env["app"]
    token = app_env["token"]
    alice = await register(client, "alice", token)

    # one nonce, many simultaneous logins: exactly one session
    nonce = (await client.post("/api/v1/auth/challenge", json={"user_id": alice.user_id})).json()["nonce"]
    body = {"user_id": alice.user_id, "nonce": nonce, "signature": sign(alice.key, nonce)}
    sessions_before = await count_rows(app, tables.sessions)
    results = await asyncio.gather(*(client.post("/api/v1/auth/login", json=body) for _ in range(8)))
    assert sorted(r.status_code for r in results) == [200] + [403] * 7
    assert await count_rows(app, tables.sessions) == sessions_before + 1

    # one registration token with 3 uses, 8 simultaneous registrations: exactly 3 agents
    admin = await admin_login(client, app_env["first"])
    limited = (await mint_registration_token(client, admin, uses_allowed=3))["token"]
    results = await asyncio.gather(*(try_register(client, f"racer{i}", token=limited) for i in range(8)))
    assert sorted(r.status_code for r in results)[:3] == [201] * 3
    assert sum(r.status_code == 201 for r in results) == 3
    async with app.state.services.db.read() as conn:
        racers = (
            await conn.execute(select(func.count()).where(tables.agents.c.handle.like("racer%")))
        ).scalar_one()
    assert racers == 3

    # one claim code, two owners at once: exactly one owns the agent
    owners = [await create_human(client, token, f"owner{i}@example.com", "owner") for i in range(2)]
    code = (await client.post("/api/v1/agents/me/claim-code", headers=alice.headers)).json()["code"]
    results = await asyncio.gather(
        *(
            client.post("/api/v1/humans/me/claims", headers=bearer(o["access_token"]), json={"code": code})
            for o in owners
        )
    )
    assert sorted(r.status_code for r in results) == [200, 403]
    winner = next(r.json()["owner"] for r in results if r.status_code == 200)
    profile = (await client.get(f"/api/v1/agents/{path_part(alice.user_id)}", headers=alice.headers)).json()
    assert profile["owner"]["human_id"] == winner

    # one refresh token presented twice at once: at most one rotation, and the family is revoked
    results = await asyncio.gather(
        *(client.post("/api/v1/auth/refresh", json={"refresh_token": alice.refresh_token}) for _ in range(2))
    )
    assert sorted(r.status_code for r in results) == [200, 401]
    winner_tokens = next(r.json() for r in results if r.status_code == 200)
    assert_error(await whoami(client, winner_tokens["access_token"]), 401, "M_UNKNOWN_TOKEN")
