"""Matrix façade, account area: discovery, push rules, login, registration (user-interactive),
tokens, devices, passwords and the E2EE stubs. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from clawlist.actions import devices, registration
from clawlist.app import create_app
from clawlist.core.clock import Clock, FrozenClock
from tests.helpers import register

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"
SERVER = "test.local"
PASSWORD = "correct horse battery"


@asynccontextmanager
async def matrix_app(
    settings_for: Any, clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[dict[str, Any]]:
    """An app with settings of our choosing (registration mode, public URL, a frozen clock)."""
    settings = settings_for(**overrides)
    app = create_app(settings, clock=clock, announce=lambda _text: None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield {
                "client": client,
                "services": app.state.services,
                "token": first.registration_token if (first := app.state.first_start) else None,
            }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(r: httpx.Response, status: int, errcode: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body.get("errcode") == errcode, body
    assert isinstance(body.get("error"), str), body
    return body


async def matrix_register(
    client: httpx.AsyncClient, username: str, reg_token: str, password: str = PASSWORD, **extra: Any
) -> dict[str, Any]:
    """The three calls matrix-nio's `register_with_token` makes."""
    body: dict[str, Any] = {"username": username, "password": password, **extra}
    r = await client.post(f"{V3}/register", json={**body, "auth": {"initial_device_display_name": "nio"}})
    assert r.status_code == 401, r.text
    session = r.json()["session"]
    r = await client.post(
        f"{V3}/register",
        json={**body, "auth": {"type": "m.login.registration_token", "token": reg_token, "session": session}},
    )
    assert r.status_code == 401, r.text
    assert r.json()["completed"] == ["m.login.registration_token"]
    r = await client.post(
        f"{V3}/register", json={**body, "auth": {"type": "m.login.dummy", "session": session}}
    )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def password_login(
    client: httpx.AsyncClient, user: str, password: str = PASSWORD, **extra: Any
) -> httpx.Response:
    return await client.post(
        f"{V3}/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
            **extra,
        },
    )


# -- discovery -------------------------------------------------------------------------------------


async def test_versions_and_well_known(client: httpx.AsyncClient) -> None:
    r = await client.get("/_matrix/client/versions")
    assert r.status_code == 200
    body = r.json()
    assert body["versions"] == [f"v1.{n}" for n in range(1, 12)]
    assert body["unstable_features"] == {}
    r = await client.get("/.well-known/matrix/client")
    assert r.status_code == 200
    assert r.json() == {"m.homeserver": {"base_url": "http://test"}}
    assert r.headers["access-control-allow-origin"] == "*"


async def test_well_known_uses_configured_public_url(settings_for: Any) -> None:
    async with matrix_app(settings_for, public_base_url="https://claw.example.org/") as env:
        r = await env["client"].get("/.well-known/matrix/client")
        assert r.json() == {"m.homeserver": {"base_url": "https://claw.example.org"}}


async def test_capabilities_and_push_rules(client: httpx.AsyncClient, reg_token: str) -> None:
    r = await client.get(f"{V3}/capabilities")
    assert_error(r, 401, "M_MISSING_TOKEN")
    reg = await matrix_register(client, "alice", reg_token)
    headers = bearer(reg["access_token"])
    caps = (await client.get(f"{V3}/capabilities", headers=headers)).json()["capabilities"]
    assert caps["m.room_versions"] == {"default": "10", "available": {"10": "stable", "11": "stable"}}
    assert caps["m.change_password"] == {"enabled": True}
    assert caps["m.set_displayname"] == {"enabled": True}
    assert caps["m.set_avatar_url"] == {"enabled": True}
    assert caps["m.3pid_changes"] == {"enabled": False}

    r = await client.get(f"{V3}/pushrules/", headers=headers)
    assert r.status_code == 200
    rules = r.json()["global"]
    assert set(rules) == {"override", "content", "room", "sender", "underride"}
    override = {rule["rule_id"]: rule for rule in rules["override"]}
    assert rules["override"][0]["rule_id"] == ".m.rule.master"
    assert override[".m.rule.master"]["enabled"] is False
    assert override[".m.rule.invite_for_me"]["conditions"][2]["pattern"] == "@alice:test.local"
    assert override[".m.rule.is_user_mention"]["conditions"][0]["value"] == "@alice:test.local"
    assert rules["content"][0]["rule_id"] == ".m.rule.contains_user_name"
    assert rules["content"][0]["pattern"] == "alice"
    underride = [rule["rule_id"] for rule in rules["underride"]]
    assert underride == [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ]
    for kind in rules.values():
        for rule in kind:
            assert rule["default"] is True and isinstance(rule["enabled"], bool)
            assert isinstance(rule["actions"], list)
    r = await client.get(f"{V3}/pushrules/global/", headers=headers)
    assert r.json() == rules


# -- login -----------------------------------------------------------------------------------------


async def test_login_flows(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{V3}/login")
    assert r.status_code == 200
    assert {f["type"] for f in r.json()["flows"]} == {"m.login.password", "m.login.token"}


async def test_password_login_every_way_to_name_the_user(client: httpx.AsyncClient, reg_token: str) -> None:
    await matrix_register(client, "alice", reg_token)
    for user in ("@alice:test.local", "alice", "ALICE"):
        r = await password_login(client, user)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user_id"] == "@alice:test.local"
        assert re.fullmatch(r"[A-Z]{10}", body["device_id"]), body
        assert body["home_server"] == SERVER
        assert body["well_known"] == {"m.homeserver": {"base_url": "http://test"}}
        assert "refresh_token" not in body and "expires_in_ms" not in body  # long-lived
        who = await client.get(f"{V3}/account/whoami", headers=bearer(body["access_token"]))
        assert who.json() == {
            "user_id": "@alice:test.local",
            "device_id": body["device_id"],
            "is_guest": False,
        }
    # the legacy top-level "user"
    r = await client.post(
        f"{V3}/login", json={"type": "m.login.password", "user": "alice", "password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    # the token also works as the deprecated access_token query parameter
    r2 = await client.get(f"{V3}/account/whoami", params={"access_token": r.json()["access_token"]})
    assert r2.status_code == 200


async def test_login_failures(client: httpx.AsyncClient, reg_token: str) -> None:
    await matrix_register(client, "alice", reg_token)
    assert_error(await password_login(client, "alice", "wrong password!"), 403, "M_FORBIDDEN")
    assert_error(await password_login(client, "nobody"), 403, "M_FORBIDDEN")
    assert_error(await password_login(client, "@alice:elsewhere.org"), 403, "M_FORBIDDEN")
    assert_error(await password_login(client, "x" * 300), 403, "M_FORBIDDEN")
    assert_error(await password_login(client, "someone@example.org"), 403, "M_FORBIDDEN")
    r = await client.post(f"{V3}/login", json={"type": "m.login.password", "user": "alice"})
    assert_error(r, 400, "M_MISSING_PARAM")
    r = await client.post(f"{V3}/login", json={"type": "m.login.password", "password": PASSWORD})
    assert_error(r, 400, "M_MISSING_PARAM")
    r = await client.post(f"{V3}/login", json={"type": "m.login.password", "user": "alice", "password": 5})
    assert_error(r, 400, "M_BAD_JSON")
    r = await client.post(f"{V3}/login", json={"type": "m.login.sso"})
    assert_error(r, 400, "M_UNKNOWN")
    r = await client.post(f"{V3}/login", json={"password": PASSWORD})
    assert_error(r, 400, "M_MISSING_PARAM")
    r = await client.post(
        f"{V3}/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"},
            "password": PASSWORD,
        },
    )
    assert_error(r, 400, "M_UNKNOWN")
    r = await client.post(f"{V3}/login", content=b"{not json")
    assert_error(r, 400, "M_NOT_JSON")
    r = await client.post(f"{V3}/login", json=["a"])
    assert_error(r, 400, "M_BAD_JSON")
    r = await password_login(client, "alice", device_id=7)
    assert_error(r, 400, "M_BAD_JSON")


async def test_refresh_tokens_on_request(client: httpx.AsyncClient, reg_token: str) -> None:
    await matrix_register(client, "alice", reg_token)
    r = await password_login(client, "alice", refresh_token=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_in_ms"] == 900_000
    first_refresh = body["refresh_token"]
    r = await client.post(f"{V3}/refresh", json={"refresh_token": first_refresh})
    assert r.status_code == 200, r.text
    renewed = r.json()
    assert renewed["expires_in_ms"] == 900_000 and renewed["refresh_token"] != first_refresh
    who = await client.get(f"{V3}/account/whoami", headers=bearer(renewed["access_token"]))
    assert who.json()["device_id"] == body["device_id"]
    # a rotated refresh token used again revokes the session
    assert_error(
        await client.post(f"{V3}/refresh", json={"refresh_token": first_refresh}), 401, "M_UNKNOWN_TOKEN"
    )
    assert_error(
        await client.get(f"{V3}/account/whoami", headers=bearer(renewed["access_token"])),
        401,
        "M_UNKNOWN_TOKEN",
    )
    assert_error(await client.post(f"{V3}/refresh", json={"refresh_token": "nope"}), 401, "M_UNKNOWN_TOKEN")
    assert_error(await client.post(f"{V3}/refresh", json={}), 400, "M_MISSING_PARAM")


async def test_device_ids_are_honoured_and_a_relogin_replaces_the_device(
    client: httpx.AsyncClient, reg_token: str
) -> None:
    await matrix_register(client, "alice", reg_token, device_id="REGDEVICE")
    first = await password_login(client, "alice", device_id="MYBOT", initial_device_display_name="my bot")
    assert first.json()["device_id"] == "MYBOT"
    token1 = first.json()["access_token"]
    assert (await client.get(f"{V3}/account/whoami", headers=bearer(token1))).json()["device_id"] == "MYBOT"
    second = await password_login(client, "alice", device_id="MYBOT")
    token2 = second.json()["access_token"]
    assert_error(await client.get(f"{V3}/account/whoami", headers=bearer(token1)), 401, "M_UNKNOWN_TOKEN")
    r = await client.get(f"{V3}/devices", headers=bearer(token2))
    assert r.status_code == 200
    listed = {d["device_id"]: d for d in r.json()["devices"]}
    assert set(listed) == {"MYBOT", "REGDEVICE"}
    assert listed["MYBOT"]["display_name"] == "my bot"  # kept across the re-login
    r = await client.get(f"{V3}/devices/MYBOT", headers=bearer(token2))
    assert r.json() == {
        "device_id": "MYBOT",
        "display_name": "my bot",
        "last_seen_ip": None,
        "last_seen_ts": None,
    }
    assert_error(await client.get(f"{V3}/devices/NOPE", headers=bearer(token2)), 404, "M_NOT_FOUND")
    r = await client.put(f"{V3}/devices/MYBOT", headers=bearer(token2), json={"display_name": "renamed"})
    assert r.status_code == 200, r.text
    assert (await client.get(f"{V3}/devices/MYBOT", headers=bearer(token2))).json()[
        "display_name"
    ] == "renamed"
    assert_error(await client.put(f"{V3}/devices/NOPE", headers=bearer(token2), json={}), 404, "M_NOT_FOUND")
    r = await client.put(f"{V3}/devices/MYBOT", headers=bearer(token2), json={"display_name": 3})
    assert_error(r, 400, "M_BAD_JSON")


async def test_login_token_is_single_use_and_expires(settings_for: Any) -> None:
    clock = FrozenClock()
    async with matrix_app(settings_for, clock=clock) as env:
        client, svc = env["client"], env["services"]
        await matrix_register(client, "alice", env["token"])
        minted = await devices.mint_login_token(svc, "alice")
        assert minted.nonce.startswith("clw_lt_")
        r = await client.post(f"{V3}/login", json={"type": "m.login.token", "token": minted.nonce})
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == "@alice:test.local"
        assert (
            await client.get(f"{V3}/account/whoami", headers=bearer(r.json()["access_token"]))
        ).status_code == 200
        r = await client.post(f"{V3}/login", json={"type": "m.login.token", "token": minted.nonce})
        assert_error(r, 403, "M_FORBIDDEN")
        late = await devices.mint_login_token(svc, "@alice:test.local")
        clock.advance(svc.settings.challenge_ttl_seconds + 1)
        assert_error(
            await client.post(f"{V3}/login", json={"type": "m.login.token", "token": late.nonce}),
            403,
            "M_FORBIDDEN",
        )
        # a login challenge's nonce is no login token
        challenge = await client.post("/api/v1/auth/challenge", json={"user_id": "@alice:test.local"})
        assert challenge.status_code == 403  # alice has no key: no challenge at all
        assert_error(
            await client.post(f"{V3}/login", json={"type": "m.login.token", "token": "clw_lt_x"}),
            403,
            "M_FORBIDDEN",
        )
        assert_error(await client.post(f"{V3}/login", json={"type": "m.login.token"}), 400, "M_MISSING_PARAM")


async def test_cli_mints_a_login_token(backend: str, app_env: dict[str, Any]) -> None:
    if backend != "sqlite":
        pytest.skip("the CLI finds the database through --data-dir here")
    from typer.testing import CliRunner

    from clawlist.cli.main import app as cli

    client = app_env["client"]
    await matrix_register(client, "alice", app_env["token"])
    data_dir = str(app_env["settings"].data_dir)
    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["agent", "login-token", "@alice:test.local", "--data-dir", data_dir],
        env={"CLAWLIST_SERVER_NAME": SERVER},
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("clw_lt_")
    r = await client.post(f"{V3}/login", json={"type": "m.login.token", "token": token, "device_id": "CLI"})
    assert r.status_code == 200, r.text
    assert r.json()["device_id"] == "CLI"


# -- registration ----------------------------------------------------------------------------------


async def test_register_with_a_token_in_three_steps(
    client: httpx.AsyncClient, app_env: dict[str, Any]
) -> None:
    svc = app_env["services"]
    once = await registration.create_token(svc, created_by="test", uses_allowed=1)
    r = await client.post(
        f"{V3}/register",
        json={"username": "nio-bot", "password": PASSWORD, "auth": {"initial_device_display_name": "x"}},
    )
    assert r.status_code == 401
    first = r.json()
    assert first["flows"] == [{"stages": ["m.login.registration_token", "m.login.dummy"]}]
    assert first["params"] == {} and isinstance(first["session"], str)
    assert "errcode" not in first and "completed" not in first
    body = await matrix_register(client, "nio-bot", once.token, initial_device_display_name="nio device")
    assert body["user_id"] == "@nio-bot:test.local"
    assert re.fullmatch(r"[A-Z]{10}", body["device_id"])
    headers = bearer(body["access_token"])
    assert (await client.get(f"{V3}/account/whoami", headers=headers)).json()[
        "user_id"
    ] == "@nio-bot:test.local"
    assert (await client.get(f"{V3}/devices", headers=headers)).json()["devices"][0][
        "display_name"
    ] == "nio device"
    # the token was used exactly once, and is now used up
    r = await client.get(f"{V1}/register/m.login.registration_token/validity", params={"token": once.token})
    assert r.json() == {"valid": False}
    # a normal agent: visible on the native API, with its handle as display name
    native = await register(client, "native", app_env["token"])
    r = await client.get("/api/v1/agents/@nio-bot:test.local", headers=native.headers)
    assert r.status_code == 200
    assert r.json()["display_name"] == "nio-bot" and r.json()["has_password"] is True
    # ... that can also log in on the native API with its password
    r = await client.post("/api/v1/auth/password", json={"user": "nio-bot", "password": PASSWORD})
    assert r.status_code == 200, r.text


async def test_register_token_stage_failures(client: httpx.AsyncClient, reg_token: str) -> None:
    base = {"username": "bob", "password": PASSWORD}
    session = (await client.post(f"{V3}/register", json=base)).json()["session"]
    r = await client.post(
        f"{V3}/register",
        json={**base, "auth": {"type": "m.login.registration_token", "token": "bogus", "session": session}},
    )
    body = assert_error(r, 401, "M_FORBIDDEN")
    assert body["session"] == session and body["flows"]
    # the dummy stage alone does not finish the token flow
    r = await client.post(
        f"{V3}/register", json={**base, "auth": {"type": "m.login.dummy", "session": session}}
    )
    assert r.status_code == 401
    assert r.json()["completed"] == ["m.login.dummy"] and "errcode" not in r.json()
    r = await client.post(
        f"{V3}/register", json={**base, "auth": {"type": "m.login.password", "session": session}}
    )
    assert_error(r, 401, "M_FORBIDDEN")
    r = await client.post(
        f"{V3}/register", json={**base, "auth": {"type": "m.login.registration_token", "session": session}}
    )
    assert_error(r, 401, "M_MISSING_PARAM")
    r = await client.post(
        f"{V3}/register", json={**base, "auth": {"type": "m.login.dummy", "session": "unknown"}}
    )
    assert_error(r, 400, "M_UNKNOWN")
    r = await client.post(f"{V3}/register", json={**base, "auth": "dummy"})
    assert_error(r, 400, "M_BAD_JSON")
    # the right token then completes the same session (nio's legacy key name works too)
    r = await client.post(
        f"{V3}/register",
        json={
            **base,
            "auth": {
                "type": "m.login.registration_token",
                "registration_token": reg_token,
                "session": session,
            },
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == "@bob:test.local"
    # the session is finished
    r = await client.post(
        f"{V3}/register",
        json={
            "username": "bob2",
            "password": PASSWORD,
            "auth": {"type": "m.login.dummy", "session": session},
        },
    )
    assert_error(r, 400, "M_UNKNOWN")


async def test_register_checks_the_request_before_auth(client: httpx.AsyncClient, reg_token: str) -> None:
    await matrix_register(client, "alice", reg_token)
    assert_error(
        await client.post(f"{V3}/register", json={"username": "alice", "password": PASSWORD}),
        400,
        "M_USER_IN_USE",
    )
    assert_error(
        await client.post(f"{V3}/register", json={"username": "ALICE", "password": PASSWORD}),
        400,
        "M_USER_IN_USE",
    )
    assert_error(
        await client.post(f"{V3}/register", json={"username": "a b", "password": PASSWORD}),
        400,
        "M_INVALID_USERNAME",
    )
    assert_error(
        await client.post(f"{V3}/register", json={"username": "x", "password": PASSWORD}),
        400,
        "M_INVALID_USERNAME",
    )
    assert_error(
        await client.post(f"{V3}/register", json={"username": "@carol:elsewhere.org", "password": PASSWORD}),
        400,
        "M_INVALID_USERNAME",
    )
    assert_error(
        await client.post(f"{V3}/register", json={"username": "admin", "password": PASSWORD}),
        400,
        "M_EXCLUSIVE",
    )
    assert_error(
        await client.post(f"{V3}/register", json={"username": "carol", "password": "short"}),
        400,
        "M_WEAK_PASSWORD",
    )
    assert_error(await client.post(f"{V3}/register", json={"username": "carol"}), 400, "M_MISSING_PARAM")
    assert_error(
        await client.post(f"{V3}/register", json={"username": 5, "password": PASSWORD}), 400, "M_BAD_JSON"
    )
    assert_error(await client.post(f"{V3}/register", content=b""), 400, "M_NOT_JSON")
    r = await client.post(f"{V3}/register", params={"kind": "guest"}, json={})
    assert_error(r, 403, "M_GUEST_ACCESS_FORBIDDEN")
    r = await client.post(f"{V3}/register", params={"kind": "robot"}, json={"password": PASSWORD})
    assert_error(r, 400, "M_INVALID_PARAM")
    # a full user id of this server is accepted as the username
    body = await matrix_register(client, "@carol:test.local", reg_token)
    assert body["user_id"] == "@carol:test.local"


async def test_register_inhibit_login_and_generated_username(
    client: httpx.AsyncClient, reg_token: str
) -> None:
    body = await matrix_register(client, "quiet", reg_token, inhibit_login=True)
    assert body == {"user_id": "@quiet:test.local", "home_server": SERVER}
    assert (await password_login(client, "quiet")).status_code == 200
    r = await client.post(f"{V3}/register", json={"password": PASSWORD})
    session = r.json()["session"]
    r = await client.post(
        f"{V3}/register",
        json={
            "password": PASSWORD,
            "auth": {"type": "m.login.registration_token", "token": reg_token, "session": session},
        },
    )
    r = await client.post(
        f"{V3}/register",
        json={
            "password": PASSWORD,
            "refresh_token": True,
            "auth": {"type": "m.login.dummy", "session": session},
        },
    )
    assert r.status_code == 200, r.text
    assert re.fullmatch(r"@agent-[a-z0-9]{10}:test\.local", r.json()["user_id"])
    assert r.json()["refresh_token"] and r.json()["expires_in_ms"] == 900_000


async def test_open_and_closed_registration(settings_for: Any) -> None:
    async with matrix_app(settings_for, registration="open") as env:
        client = env["client"]
        r = await client.post(f"{V3}/register", json={"username": "free", "password": PASSWORD})
        assert r.status_code == 401
        assert r.json()["flows"] == [{"stages": ["m.login.dummy"]}]
        # matrix-nio's plain register(): one call with the dummy stage
        r = await client.post(
            f"{V3}/register",
            json={"username": "free", "password": PASSWORD, "auth": {"type": "m.login.dummy"}},
        )
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == "@free:test.local"
        # register_with_token still works against an open server
        await matrix_register(client, "tokened", env["token"])
    async with matrix_app(settings_for, registration="closed") as env:
        client = env["client"]
        r = await client.post(f"{V3}/register", json={"username": "shut", "password": PASSWORD})
        assert_error(r, 403, "M_FORBIDDEN")
        r = await client.get(f"{V1}/register/m.login.registration_token/validity", params={"token": "x"})
        assert_error(r, 403, "M_FORBIDDEN")


async def test_username_availability_and_token_validity(client: httpx.AsyncClient, reg_token: str) -> None:
    r = await client.get(f"{V3}/register/available", params={"username": "newbie"})
    assert r.status_code == 200 and r.json() == {"available": True}
    await matrix_register(client, "newbie", reg_token)
    assert_error(
        await client.get(f"{V3}/register/available", params={"username": "newbie"}), 400, "M_USER_IN_USE"
    )
    assert_error(
        await client.get(f"{V3}/register/available", params={"username": "no way"}), 400, "M_INVALID_USERNAME"
    )
    assert_error(await client.get(f"{V3}/register/available"), 400, "M_MISSING_PARAM")
    path = f"{V1}/register/m.login.registration_token/validity"
    assert (await client.get(path, params={"token": reg_token})).json() == {"valid": True}
    assert (await client.get(path, params={"token": "bogus"})).json() == {"valid": False}
    assert_error(await client.get(path), 400, "M_MISSING_PARAM")


# -- sessions --------------------------------------------------------------------------------------


async def test_native_agents_are_matrix_users(client: httpx.AsyncClient, reg_token: str) -> None:
    native = await register(client, "keyed", reg_token, password=PASSWORD)
    who = await client.get(f"{V3}/account/whoami", headers=native.headers)
    assert who.status_code == 200
    assert who.json()["user_id"] == "@keyed:test.local" and who.json()["is_guest"] is False
    assert who.json()["device_id"]  # the native session stands in for a device
    r = await password_login(client, "@keyed:test.local")
    assert r.status_code == 200, r.text
    listed = (await client.get(f"{V3}/devices", headers=native.headers)).json()["devices"]
    assert who.json()["device_id"] in {d["device_id"] for d in listed} and len(listed) == 2
    # a key-only agent has no password to log in with
    keyonly = await register(client, "keyonly", reg_token)
    assert_error(await password_login(client, "keyonly"), 403, "M_FORBIDDEN")
    assert (await client.get(f"{V3}/account/whoami", headers=keyonly.headers)).status_code == 200


async def test_humans_and_bad_tokens_are_refused(client: httpx.AsyncClient, reg_token: str) -> None:
    r = await client.post(
        "/api/v1/humans",
        json={"email": "h@example.org", "password": PASSWORD, "registration_token": reg_token},
    )
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/auth/password", json={"user": "h@example.org", "password": PASSWORD})
    human = r.json()["access_token"]
    assert_error(await client.get(f"{V3}/account/whoami", headers=bearer(human)), 403, "M_FORBIDDEN")
    assert_error(await client.get(f"{V3}/account/whoami", headers=bearer("garbage")), 401, "M_UNKNOWN_TOKEN")
    assert_error(await client.get(f"{V3}/account/whoami"), 401, "M_MISSING_TOKEN")


async def test_logout_and_logout_all(client: httpx.AsyncClient, reg_token: str) -> None:
    first = (await matrix_register(client, "alice", reg_token))["access_token"]
    second = (await password_login(client, "alice")).json()["access_token"]
    third = (await password_login(client, "alice", refresh_token=True)).json()["access_token"]
    r = await client.post(f"{V3}/logout", headers=bearer(first))
    assert r.status_code == 200 and r.json() == {}
    assert_error(await client.get(f"{V3}/account/whoami", headers=bearer(first)), 401, "M_UNKNOWN_TOKEN")
    assert (await client.get(f"{V3}/account/whoami", headers=bearer(second))).status_code == 200
    r = await client.post(f"{V3}/logout/all", headers=bearer(second))
    assert r.status_code == 200 and r.json() == {}
    for token in (second, third):
        assert_error(await client.get(f"{V3}/account/whoami", headers=bearer(token)), 401, "M_UNKNOWN_TOKEN")
    assert_error(await client.post(f"{V3}/logout", headers=bearer(first)), 401, "M_UNKNOWN_TOKEN")


async def test_change_password_with_interactive_auth(client: httpx.AsyncClient, reg_token: str) -> None:
    current = (await matrix_register(client, "alice", reg_token))["access_token"]
    other = (await password_login(client, "alice")).json()["access_token"]
    headers = bearer(current)
    new = "a brand new password"
    r = await client.post(f"{V3}/account/password", headers=headers, json={"new_password": new})
    assert r.status_code == 401
    session = r.json()["session"]
    assert r.json()["flows"] == [{"stages": ["m.login.password"]}]
    wrong = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "not it at all",
        "session": session,
    }
    r = await client.post(
        f"{V3}/account/password", headers=headers, json={"new_password": new, "auth": wrong}
    )
    assert_error(r, 401, "M_FORBIDDEN")
    someone_else = {**wrong, "identifier": {"type": "m.id.user", "user": "bob"}, "password": PASSWORD}
    r = await client.post(
        f"{V3}/account/password", headers=headers, json={"new_password": new, "auth": someone_else}
    )
    assert_error(r, 401, "M_FORBIDDEN")
    r = await client.post(
        f"{V3}/account/password", headers=headers, json={"new_password": "short", "auth": wrong}
    )
    assert_error(r, 400, "M_WEAK_PASSWORD")
    assert_error(
        await client.post(f"{V3}/account/password", headers=headers, json={}), 400, "M_MISSING_PARAM"
    )
    right = {**wrong, "password": PASSWORD}
    r = await client.post(
        f"{V3}/account/password", headers=headers, json={"new_password": new, "auth": right}
    )
    assert r.status_code == 200, r.text
    assert_error(await password_login(client, "alice"), 403, "M_FORBIDDEN")
    assert (await password_login(client, "alice", new)).status_code == 200
    assert (await client.get(f"{V3}/account/whoami", headers=headers)).status_code == 200
    assert_error(await client.get(f"{V3}/account/whoami", headers=bearer(other)), 401, "M_UNKNOWN_TOKEN")
    # logout_devices: false keeps the other sessions
    other = (await password_login(client, "alice", new)).json()["access_token"]
    auth = {"type": "m.login.password", "user": "@alice:test.local", "password": new}
    r = await client.post(
        f"{V3}/account/password",
        headers=headers,
        json={"new_password": PASSWORD, "logout_devices": False, "auth": auth},
    )
    assert r.status_code == 200, r.text
    assert (await client.get(f"{V3}/account/whoami", headers=bearer(other))).status_code == 200


# -- end-to-end encryption is not offered ----------------------------------------------------------


async def test_encryption_stubs(client: httpx.AsyncClient, reg_token: str) -> None:
    headers = bearer((await matrix_register(client, "alice", reg_token))["access_token"])
    calls: list[tuple[str, str, Any, Any]] = [
        ("POST", "/keys/upload", {"device_keys": {}}, {"one_time_key_counts": {}}),
        (
            "POST",
            "/keys/query",
            {"device_keys": {"@bob:test.local": []}},
            {"device_keys": {}, "failures": {}},
        ),
        ("POST", "/keys/claim", {"one_time_keys": {}}, {"one_time_keys": {}, "failures": {}}),
        ("PUT", "/sendToDevice/m.room_key_request/txn1", {"messages": {}}, {}),
    ]
    for method, path, body, expected in calls:
        r = await client.request(method, f"{V3}{path}", headers=headers, json=body)
        assert r.status_code == 200, (path, r.text)
        assert r.json() == expected
        assert_error(await client.request(method, f"{V3}{path}", json=body), 401, "M_MISSING_TOKEN")
        assert_error(
            await client.request(method, f"{V3}{path}", headers=headers, content=b"[1"), 400, "M_NOT_JSON"
        )
    r = await client.get(f"{V3}/keys/changes", headers=headers, params={"from": "s1", "to": "s2"})
    assert r.json() == {"changed": [], "left": []}
    assert_error(await client.get(f"{V3}/room_keys/version", headers=headers), 404, "M_NOT_FOUND")
    r = await client.get("/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", headers=headers)
    assert_error(r, 404, "M_UNRECOGNIZED")
