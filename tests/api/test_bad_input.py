"""Bad input: every malformed, forged, stale or unauthorised request gets a 4xx with an errcode,
never a 500, and changes nothing. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from clawlist.app import create_app
from clawlist.core.clock import FrozenClock
from clawlist.storage import tables
from tests.helpers import Agent, new_keypair, register, send, sign

SERVER = "test.local"


def p(ref: str) -> str:
    return quote(ref, safe="")


@dataclass
class World:
    app: FastAPI
    client: httpx.AsyncClient
    token: str
    alice: Agent  # owner of `room`
    bob: Agent  # member of `room`
    carol: Agent  # not in `room`
    room: str
    event_id: str


async def make_world(app: FastAPI, client: httpx.AsyncClient, token: str) -> World:
    alice = await register(client, "alice", token)
    bob = await register(client, "bob", token)
    carol = await register(client, "carol", token)
    r = await client.post(
        "/api/v1/rooms", headers=alice.headers, json={"name": "deals", "visibility": "public"}
    )
    assert r.status_code == 201, r.text
    room = r.json()["room_id"]
    r = await client.post(f"/api/v1/rooms/{p(room)}/join", headers=bob.headers)
    assert r.status_code == 200, r.text
    event_id = await send(client, alice, room, "hello")
    await send(client, bob, room, "hi")
    return World(app, client, token, alice, bob, carol, room, event_id)


@pytest.fixture
async def world(app_env: dict[str, Any]) -> World:
    return await make_world(app_env["app"], app_env["client"], app_env["token"])


async def snapshot(app: FastAPI, *, skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Every row of every table, so a test can prove that a request changed nothing at all."""
    out: dict[str, list[str]] = {}
    async with app.state.services.db.read() as conn:
        for table in tables.metadata.sorted_tables:
            if table.name in skip:
                continue
            rows = (await conn.execute(select(table))).all()
            out[table.name] = sorted(repr(tuple(row)) for row in rows)
    return out


def assert_error(
    r: httpx.Response, status: int | tuple[int, ...], errcode: str | tuple[str, ...] | None = None
) -> None:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text)
    assert 400 <= r.status_code < 500
    body = r.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("errcode"), str) and body["errcode"], body
    assert isinstance(body.get("error"), str), body
    if errcode is not None:
        codes = errcode if isinstance(errcode, tuple) else (errcode,)
        assert body["errcode"] in codes, body


# ---------------------------------------------------------------- a table of bad requests

Request = Callable[[World], Awaitable[httpx.Response]]


def post_json_bytes(path: Callable[[World], str], raw: bytes, auth: str = "alice") -> Request:
    async def go(w: World) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers.update(getattr(w, auth).headers)
        return await w.client.post(path(w), content=raw, headers=headers)

    return go


def call(method: str, path: Callable[[World], str], auth: str | None = "alice", **kwargs: Any) -> Request:
    async def go(w: World) -> httpx.Response:
        headers = dict(getattr(w, auth).headers) if auth else {}
        headers.update(kwargs.get("headers") or {})
        rest = {k: v for k, v in kwargs.items() if k != "headers"}
        return await w.client.request(method, path(w), headers=headers, **rest)

    return go


def msgs(w: World) -> str:
    return f"/api/v1/rooms/{p(w.room)}/messages"


def agents(_w: World) -> str:
    return "/api/v1/agents"


def key_of(n: int) -> str:
    return base64.b64encode(b"\x01" * n).decode()


_, GOOD_KEY = new_keypair()

Case = tuple[str, Request, int | tuple[int, ...], str | tuple[str, ...] | None]

GROUPS: dict[str, list[Case]] = {
    "malformed-json": [
        ("malformed json message", post_json_bytes(msgs, b'{"txn_id": "t1", "body": '), 400, "M_NOT_JSON"),
        ("malformed json agent", post_json_bytes(agents, b'{"handle": "zed",', auth=""), 400, "M_NOT_JSON"),
        (
            "not utf-8",
            post_json_bytes(msgs, b'{"txn_id": "t1", "body": "\xff\xfe"}'),
            400,
            ("M_NOT_JSON", "M_BAD_JSON"),
        ),
        ("empty body", post_json_bytes(msgs, b""), 400, ("M_NOT_JSON", "M_BAD_JSON", "M_MISSING_PARAM")),
        ("json array", post_json_bytes(msgs, b'["txn_id", "body"]'), 400, ("M_BAD_JSON", "M_NOT_JSON")),
        ("json string", post_json_bytes(msgs, b'"hello"'), 400, ("M_BAD_JSON", "M_NOT_JSON")),
        ("json number", post_json_bytes(agents, b"42", auth=""), 400, ("M_BAD_JSON", "M_NOT_JSON")),
        ("json null", post_json_bytes(agents, b"null", auth=""), 400, ("M_BAD_JSON", "M_NOT_JSON")),
        ("json true", post_json_bytes(msgs, b"true"), 400, ("M_BAD_JSON", "M_NOT_JSON")),
        ("deeply nested", post_json_bytes(msgs, b"[" * 100_000 + b"]" * 100_000), 400, None),
        (
            "deeply nested extra field",
            post_json_bytes(
                msgs, b'{"txn_id": "deep", "body": "x", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
            ),
            400,
            None,
        ),
        ("form-encoded body", post_json_bytes(msgs, b"txn_id=t&body=x"), 400, "M_NOT_JSON"),
        (
            "form content type",
            lambda w: w.client.post(
                msgs(w),
                headers={**w.alice.headers, "Content-Type": "application/x-www-form-urlencoded"},
                content=b"txn_id=t&body=x",
            ),
            400,
            None,
        ),
    ],
    "wrong-types": [
        (
            "handle is a number",
            call("POST", agents, None, json={"handle": 123, "public_key": GOOD_KEY}),
            400,
            None,
        ),
        (
            "handle is null",
            call("POST", agents, None, json={"handle": None, "public_key": GOOD_KEY}),
            400,
            None,
        ),
        (
            "handle is a list",
            call("POST", agents, None, json={"handle": ["x"], "public_key": GOOD_KEY}),
            400,
            None,
        ),
        (
            "public_key is a number",
            call("POST", agents, None, json={"handle": "zed", "public_key": 5}),
            400,
            None,
        ),
        (
            "unknown field",
            call("POST", agents, None, json={"handle": "zed", "public_key": GOOD_KEY, "admin": True}),
            400,
            None,
        ),
        (
            "display_name object",
            call("POST", agents, None, json={"handle": "zed", "public_key": GOOD_KEY, "display_name": {}}),
            400,
            None,
        ),
        ("missing handle", call("POST", agents, None, json={"public_key": GOOD_KEY}), 400, "M_MISSING_PARAM"),
        ("message body is a number", call("POST", msgs, json={"txn_id": "t1", "body": 5}), 400, None),
        ("message body missing", call("POST", msgs, json={"txn_id": "t1"}), 400, "M_MISSING_PARAM"),
        ("txn_id is null", call("POST", msgs, json={"txn_id": None, "body": "x"}), 400, None),
        ("txn_id empty", call("POST", msgs, json={"txn_id": "", "body": "x"}), 400, None),
        ("txn_id too long", call("POST", msgs, json={"txn_id": "t" * 256, "body": "x"}), 400, None),
        (
            "msgtype is a list",
            call("POST", msgs, json={"txn_id": "t1", "body": "x", "msgtype": []}),
            400,
            None,
        ),
        (
            "reply_to is a number",
            call("POST", msgs, json={"txn_id": "t1", "body": "x", "reply_to": 7}),
            400,
            None,
        ),
        (
            "huge integer in content",
            call("POST", msgs, json={"txn_id": "big", "body": "x", "n": 10**30}),
            400,
            None,
        ),
        (
            "profile handle is a number",
            call("PATCH", lambda w: "/api/v1/agents/me", json={"handle": 123}),
            400,
            None,
        ),
        ("profile bio is a number", call("PATCH", lambda w: "/api/v1/agents/me", json={"bio": 5}), 400, None),
        (
            "profile bio too long",
            call("PATCH", lambda w: "/api/v1/agents/me", json={"bio": "x" * 4001}),
            400,
            None,
        ),
        (
            "challenge user_id number",
            call("POST", lambda w: "/api/v1/auth/challenge", None, json={"user_id": 5}),
            400,
            None,
        ),
        (
            "refresh token number",
            call("POST", lambda w: "/api/v1/auth/refresh", None, json={"refresh_token": 5}),
            400,
            None,
        ),
        (
            "password is a number",
            call(
                "POST",
                lambda w: "/api/v1/auth/password",
                None,
                json={"user": "alice", "password": 12345678901},
            ),
            400,
            None,
        ),
        ("room name is a number", call("POST", lambda w: "/api/v1/rooms", json={"name": 5}), 400, None),
        (
            "room visibility bogus",
            call("POST", lambda w: "/api/v1/rooms", json={"visibility": "everyone"}),
            400,
            None,
        ),
        (
            "room invite not a list",
            call("POST", lambda w: "/api/v1/rooms", json={"invite": "@bob:test.local"}),
            400,
            None,
        ),
        (
            "state content not object",
            call("PUT", lambda w: f"/api/v1/rooms/{p(w.room)}/state/m.room.topic", json={"content": "x"}),
            400,
            None,
        ),
        ("dm user_id number", call("POST", lambda w: "/api/v1/dms", json={"user_id": 5}), 400, None),
    ],
    "bad-keys": [
        (
            "public_key not base64",
            call("POST", agents, None, json={"handle": "zed", "public_key": "not base64!!"}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "public_key empty",
            call("POST", agents, None, json={"handle": "zed", "public_key": ""}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "public_key 31 bytes",
            call("POST", agents, None, json={"handle": "zed", "public_key": key_of(31)}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "public_key 33 bytes",
            call("POST", agents, None, json={"handle": "zed", "public_key": key_of(33)}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "public_key 64 bytes",
            call("POST", agents, None, json={"handle": "zed", "public_key": key_of(64)}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "public_key hex",
            call("POST", agents, None, json={"handle": "zed", "public_key": "ab" * 32}),
            400,
            "M_INVALID_PARAM",
        ),
    ],
    "unknown-rooms": [
        (
            "history of unknown room",
            call("GET", lambda w: f"/api/v1/rooms/{p('!nope:' + SERVER)}/messages"),
            404,
            "M_NOT_FOUND",
        ),
        (
            "send to unknown room",
            call(
                "POST",
                lambda w: f"/api/v1/rooms/{p('!nope:' + SERVER)}/messages",
                json={"txn_id": "t1", "body": "x"},
            ),
            404,
            "M_NOT_FOUND",
        ),
        (
            "join unknown room",
            call("POST", lambda w: f"/api/v1/rooms/{p('!nope:' + SERVER)}/join"),
            404,
            "M_NOT_FOUND",
        ),
        (
            "join unknown alias",
            call("POST", lambda w: f"/api/v1/rooms/{p('#nope:' + SERVER)}/join"),
            404,
            "M_NOT_FOUND",
        ),
        (
            "state of unknown room",
            call("GET", lambda w: f"/api/v1/rooms/{p('!nope:' + SERVER)}/state"),
            404,
            "M_NOT_FOUND",
        ),
        (
            "members of unknown room",
            call("GET", lambda w: f"/api/v1/rooms/{p('!nope:' + SERVER)}/members"),
            404,
            "M_NOT_FOUND",
        ),
        (
            "summary of unknown room",
            call("GET", lambda w: f"/api/v1/rooms/{p('!nope:' + SERVER)}"),
            404,
            "M_NOT_FOUND",
        ),
        (
            "invite into unknown room",
            call(
                "POST",
                lambda w: f"/api/v1/rooms/{p('!nope:' + SERVER)}/invite",
                json={"user_id": "@bob:" + SERVER},
            ),
            404,
            "M_NOT_FOUND",
        ),
        (
            "kick in unknown room",
            call(
                "POST",
                lambda w: f"/api/v1/rooms/{p('!nope:' + SERVER)}/kick",
                json={"user_id": "@bob:" + SERVER},
            ),
            404,
            "M_NOT_FOUND",
        ),
        (
            "leave unknown room",
            call("POST", lambda w: f"/api/v1/rooms/{p('!nope:' + SERVER)}/leave"),
            404,
            "M_NOT_FOUND",
        ),
        (
            "set state in unknown room",
            call(
                "PUT",
                lambda w: f"/api/v1/rooms/{p('!nope:' + SERVER)}/state/m.room.topic",
                json={"content": {"topic": "x"}},
            ),
            404,
            "M_NOT_FOUND",
        ),
        (
            "resolve unknown alias",
            call("GET", lambda w: f"/api/v1/directory/{p('#nope:' + SERVER)}"),
            404,
            "M_NOT_FOUND",
        ),
        (
            "unknown event",
            call("GET", lambda w: f"/api/v1/rooms/{p(w.room)}/events/{p('$nope')}"),
            404,
            "M_NOT_FOUND",
        ),
        (
            "react to unknown event",
            call(
                "POST",
                lambda w: f"/api/v1/rooms/{p(w.room)}/reactions",
                json={"txn_id": "r1", "event_id": "$nope", "key": "+1"},
            ),
            404,
            "M_NOT_FOUND",
        ),
        (
            "redact unknown event",
            call(
                "POST",
                lambda w: f"/api/v1/rooms/{p(w.room)}/redactions",
                json={"txn_id": "r2", "event_id": "$nope"},
            ),
            404,
            "M_NOT_FOUND",
        ),
        (
            "reply to unknown event",
            call("POST", msgs, json={"txn_id": "r3", "body": "x", "reply_to": "$nope"}),
            (400, 404),
            None,
        ),
        ("malformed room id", call("GET", lambda w: "/api/v1/rooms/nonsense/messages"), 400, None),
        (
            "malformed room id no server",
            call("POST", lambda w: f"/api/v1/rooms/{p('!abc')}/messages", json={"txn_id": "t1", "body": "x"}),
            400,
            None,
        ),
    ],
    "unknown-users": [
        (
            "profile of unknown user",
            call("GET", lambda w: f"/api/v1/agents/{p('@nobody:' + SERVER)}"),
            404,
            "M_NOT_FOUND",
        ),
        (
            "profile of unknown bare handle",
            call("GET", lambda w: "/api/v1/agents/nobody"),
            404,
            "M_NOT_FOUND",
        ),
        (
            "profile of foreign user",
            call("GET", lambda w: f"/api/v1/agents/{p('@alice:elsewhere.example')}"),
            404,
            "M_NOT_FOUND",
        ),
        ("profile of malformed user id", call("GET", lambda w: f"/api/v1/agents/{p('@')}"), 400, None),
        (
            "challenge for unknown user",
            call("POST", lambda w: "/api/v1/auth/challenge", None, json={"user_id": "@nobody:" + SERVER}),
            404,
            "M_NOT_FOUND",
        ),
        (
            "challenge for malformed user",
            call("POST", lambda w: "/api/v1/auth/challenge", None, json={"user_id": "@nocolon"}),
            400,
            None,
        ),
        (
            "challenge with empty user",
            call("POST", lambda w: "/api/v1/auth/challenge", None, json={"user_id": ""}),
            400,
            None,
        ),
        (
            "dm with unknown user",
            call("POST", lambda w: "/api/v1/dms", json={"user_id": "@nobody:" + SERVER}),
            404,
            "M_NOT_FOUND",
        ),
        (
            "dm with oneself",
            call("POST", lambda w: "/api/v1/dms", json={"user_id": "@alice:" + SERVER}),
            400,
            None,
        ),
        (
            "invite unknown user",
            call(
                "POST", lambda w: f"/api/v1/rooms/{p(w.room)}/invite", json={"user_id": "@nobody:" + SERVER}
            ),
            404,
            "M_NOT_FOUND",
        ),
        (
            "kick unknown user",
            call("POST", lambda w: f"/api/v1/rooms/{p(w.room)}/kick", json={"user_id": "@nobody:" + SERVER}),
            (403, 404),
            None,
        ),
        (
            "ban unknown user",
            call("POST", lambda w: f"/api/v1/rooms/{p(w.room)}/ban", json={"user_id": "@nobody:" + SERVER}),
            404,
            "M_NOT_FOUND",
        ),
    ],
    "bad-tokens": [
        (
            "no token on send",
            call("POST", msgs, None, json={"txn_id": "t1", "body": "x"}),
            401,
            "M_MISSING_TOKEN",
        ),
        ("no token on history", call("GET", msgs, None), 401, "M_MISSING_TOKEN"),
        ("no token on whoami", call("GET", lambda w: "/api/v1/auth/whoami", None), 401, "M_MISSING_TOKEN"),
        (
            "no token on create room",
            call("POST", lambda w: "/api/v1/rooms", None, json={"name": "x"}),
            401,
            "M_MISSING_TOKEN",
        ),
        ("no token on agents", call("GET", agents, None), 401, "M_MISSING_TOKEN"),
        ("no token on logout", call("POST", lambda w: "/api/v1/auth/logout", None), 401, "M_MISSING_TOKEN"),
        (
            "basic auth scheme",
            call(
                "GET", lambda w: "/api/v1/auth/whoami", None, headers={"Authorization": "Basic YWxpY2U6cHc="}
            ),
            401,
            "M_MISSING_TOKEN",
        ),
        (
            "empty bearer",
            call("GET", lambda w: "/api/v1/auth/whoami", None, headers={"Authorization": "Bearer "}),
            401,
            "M_MISSING_TOKEN",
        ),
        (
            "garbage bearer",
            call("GET", lambda w: "/api/v1/auth/whoami", None, headers={"Authorization": "Bearer garbage"}),
            401,
            "M_UNKNOWN_TOKEN",
        ),
        (
            "garbage static",
            call(
                "GET",
                lambda w: "/api/v1/auth/whoami",
                None,
                headers={"Authorization": "Bearer clw_at_garbage"},
            ),
            401,
            "M_UNKNOWN_TOKEN",
        ),
        (
            "refresh token as access token",
            lambda w: w.client.get(
                "/api/v1/auth/whoami", headers={"Authorization": f"Bearer {w.alice.refresh_token}"}
            ),
            401,
            "M_UNKNOWN_TOKEN",
        ),
        (
            "garbage query token",
            call("GET", lambda w: "/api/v1/auth/whoami?access_token=nope", None),
            401,
            "M_UNKNOWN_TOKEN",
        ),
        (
            "unknown refresh token",
            call("POST", lambda w: "/api/v1/auth/refresh", None, json={"refresh_token": "clw_rt_nope"}),
            401,
            "M_UNKNOWN_TOKEN",
        ),
        (
            "empty refresh token",
            call("POST", lambda w: "/api/v1/auth/refresh", None, json={"refresh_token": ""}),
            401,
            None,
        ),
    ],
    "not-in-room": [
        (
            "send to room not joined",
            call("POST", msgs, "carol", json={"txn_id": "c1", "body": "let me in"}),
            403,
            "M_FORBIDDEN",
        ),
        (
            "event to room not joined",
            call(
                "POST",
                lambda w: f"/api/v1/rooms/{p(w.room)}/events/com.example.x",
                "carol",
                json={"txn_id": "c2", "content": {}},
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "react in room not joined",
            lambda w: w.client.post(
                f"/api/v1/rooms/{p(w.room)}/reactions",
                headers=w.carol.headers,
                json={"txn_id": "c3", "event_id": w.event_id, "key": "+1"},
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "redact in room not joined",
            lambda w: w.client.post(
                f"/api/v1/rooms/{p(w.room)}/redactions",
                headers=w.carol.headers,
                json={"txn_id": "c4", "event_id": w.event_id},
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "state in room not joined",
            call(
                "PUT",
                lambda w: f"/api/v1/rooms/{p(w.room)}/state/m.room.topic",
                "carol",
                json={"content": {"topic": "mine"}},
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "invite from outside",
            call(
                "POST",
                lambda w: f"/api/v1/rooms/{p(w.room)}/invite",
                "carol",
                json={"user_id": "@carol:" + SERVER},
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "leave room not joined",
            call("POST", lambda w: f"/api/v1/rooms/{p(w.room)}/leave", "carol"),
            (403, 400),
            None,
        ),
    ],
    "power-levels": [
        (
            "member kicks owner",
            call(
                "POST",
                lambda w: f"/api/v1/rooms/{p(w.room)}/kick",
                "bob",
                json={"user_id": "@alice:" + SERVER},
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "member bans owner",
            call(
                "POST",
                lambda w: f"/api/v1/rooms/{p(w.room)}/ban",
                "bob",
                json={"user_id": "@alice:" + SERVER},
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "member bans outsider",
            call(
                "POST",
                lambda w: f"/api/v1/rooms/{p(w.room)}/ban",
                "bob",
                json={"user_id": "@carol:" + SERVER},
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "member grants itself power",
            call(
                "PUT",
                lambda w: f"/api/v1/rooms/{p(w.room)}/state/m.room.power_levels",
                "bob",
                json={"content": {"users": {"@bob:" + SERVER: 100, "@alice:" + SERVER: 100}}},
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "member renames room",
            call(
                "PUT",
                lambda w: f"/api/v1/rooms/{p(w.room)}/state/m.room.name",
                "bob",
                json={"content": {"name": "bob's"}},
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "member changes join rule",
            call(
                "PUT",
                lambda w: f"/api/v1/rooms/{p(w.room)}/state/m.room.join_rules",
                "bob",
                json={"content": {"join_rule": "invite"}},
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "member redacts owner's event",
            lambda w: w.client.post(
                f"/api/v1/rooms/{p(w.room)}/redactions",
                headers=w.bob.headers,
                json={"txn_id": "b1", "event_id": w.event_id},
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "member sets alias",
            call(
                "PUT",
                lambda w: f"/api/v1/rooms/{p(w.room)}/state/m.room.canonical_alias",
                "bob",
                json={"content": {"alias": "#x:" + SERVER}},
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "member changes a membership via state",
            call(
                "PUT",
                lambda w: f"/api/v1/rooms/{p(w.room)}/state/m.room.member/{p('@alice:' + SERVER)}",
                "bob",
                json={"content": {"membership": "leave"}},
            ),
            (400, 403),
            None,
        ),
        (
            "owner rewrites create",
            call(
                "PUT",
                lambda w: f"/api/v1/rooms/{p(w.room)}/state/m.room.create",
                "alice",
                json={"content": {"creator": "@bob:" + SERVER}},
            ),
            (400, 403),
            None,
        ),
        (
            "admin-only: registration token by agent",
            call("POST", lambda w: "/api/v1/admin/registration-tokens", "alice", json={}),
            403,
            "M_FORBIDDEN",
        ),
        (
            "admin-only: role by agent",
            call("PUT", lambda w: "/api/v1/admin/humans/h_x/role", "alice", json={"role": "admin"}),
            403,
            "M_FORBIDDEN",
        ),
    ],
    "duplicate-handles": [
        (
            "duplicate handle upper",
            call("POST", agents, None, json={"handle": "ALICE", "public_key": GOOD_KEY}),
            409,
            "M_USER_IN_USE",
        ),
        (
            "duplicate handle mixed",
            call("POST", agents, None, json={"handle": "Bob", "public_key": GOOD_KEY}),
            409,
            "M_USER_IN_USE",
        ),
        (
            "rename to taken handle",
            call("PATCH", lambda w: "/api/v1/agents/me", "carol", json={"handle": "ALICE"}),
            409,
            "M_USER_IN_USE",
        ),
    ],
    "unknown-routes": [
        ("unknown route", call("GET", lambda w: "/api/v1/nope"), 404, "M_UNRECOGNIZED"),
        ("unknown route post", call("POST", lambda w: "/api/v1/nope", json={}), 404, "M_UNRECOGNIZED"),
        ("unknown api version", call("GET", lambda w: "/api/v2/agents"), 404, "M_UNRECOGNIZED"),
        ("unknown root", call("GET", lambda w: "/nope", None), 404, "M_UNRECOGNIZED"),
        ("wrong method", call("DELETE", agents), 405, "M_UNRECOGNIZED"),
        ("wrong method on login", call("GET", lambda w: "/api/v1/auth/login", None), 405, "M_UNRECOGNIZED"),
    ],
    "pagination": [
        ("bad from token", call("GET", msgs, params={"from": "garbage"}), 400, "M_INVALID_PARAM"),
        ("bad from token p", call("GET", msgs, params={"from": "p"}), 400, "M_INVALID_PARAM"),
        ("bad from token negative", call("GET", msgs, params={"from": "p-1"}), 400, "M_INVALID_PARAM"),
        (
            "bad from token unicode digits",
            call("GET", msgs, params={"from": "p\u0663\u0664"}),
            400,
            "M_INVALID_PARAM",
        ),
        ("bad from token huge", call("GET", msgs, params={"from": "p" + "9" * 30}), 400, "M_INVALID_PARAM"),
        ("bad dir", call("GET", msgs, params={"dir": "x"}), 400, "M_INVALID_PARAM"),
        ("limit 0", call("GET", msgs, params={"limit": "0"}), 400, "M_INVALID_PARAM"),
        ("limit -1", call("GET", msgs, params={"limit": "-1"}), 400, "M_INVALID_PARAM"),
        ("limit abc", call("GET", msgs, params={"limit": "abc"}), 400, "M_INVALID_PARAM"),
        ("limit 1.5", call("GET", msgs, params={"limit": "1.5"}), 400, "M_INVALID_PARAM"),
        ("limit empty", call("GET", msgs, params={"limit": ""}), 400, "M_INVALID_PARAM"),
        ("agents limit 0", call("GET", agents, params={"limit": "0"}), 400, "M_INVALID_PARAM"),
        ("agents limit abc", call("GET", agents, params={"limit": "abc"}), 400, "M_INVALID_PARAM"),
        (
            "public rooms limit -1",
            call("GET", lambda w: "/api/v1/rooms/public", params={"limit": "-1"}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "public rooms bad type",
            call("GET", lambda w: "/api/v1/rooms/public", params={"type": "castle"}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "members bad filter",
            call("GET", lambda w: f"/api/v1/rooms/{p(w.room)}/members", params={"membership": "royalty"}),
            400,
            "M_INVALID_PARAM",
        ),
    ],
}


@pytest.mark.parametrize("group", list(GROUPS))
async def test_bad_requests_get_4xx_and_change_nothing(world, group):
    """One world per group keeps this fast; every case is still checked and reported by name."""
    failures: list[str] = []
    for name, request_, status, errcode in GROUPS[group]:
        before = await snapshot(world.app)
        r = await request_(world)
        try:
            assert_error(r, status, errcode)
            assert await snapshot(world.app) == before, "the request changed the database"
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- oversized bodies


async def test_oversized_bodies_are_refused(world, app_env):
    limit = app_env["settings"].max_body_bytes
    before = await snapshot(world.app)
    big = "x" * (limit + 1)
    r = await world.client.post(
        msgs(world), headers=world.alice.headers, json={"txn_id": "big1", "body": big}
    )
    assert_error(r, 413, "M_TOO_LARGE")
    r = await world.client.post(
        "/api/v1/agents", json={"handle": "zed", "public_key": GOOD_KEY, "display_name": big}
    )
    assert_error(r, 413, "M_TOO_LARGE")
    r = await world.client.put(
        f"/api/v1/rooms/{p(world.room)}/state/m.room.topic",
        headers=world.alice.headers,
        json={"content": {"topic": big}},
    )
    assert_error(r, 413, "M_TOO_LARGE")

    # Without a Content-Length (chunked): counted while streaming.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"txn_id": "big2", "body": "'
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536
        yield b'"}'

    r = await world.client.post(
        msgs(world), headers={**world.alice.headers, "Content-Type": "application/json"}, content=chunks()
    )
    assert_error(r, 413, "M_TOO_LARGE")

    # A lying Content-Length
    r = await world.client.post(
        msgs(world),
        headers={**world.alice.headers, "Content-Type": "application/json", "Content-Length": "abc"},
        content=b'{"txn_id": "big3", "body": "x"}',
    )
    assert_error(r, 400)
    assert await snapshot(world.app) == before

    # Just under the limit still works (the event-size limit is a separate, smaller rule).
    r = await world.client.post(
        msgs(world), headers=world.alice.headers, json={"txn_id": "ok", "body": "fine"}
    )
    assert r.status_code == 200, r.text


async def test_event_over_max_event_bytes_is_refused(world, app_env):
    size = app_env["settings"].max_event_bytes
    before = await snapshot(world.app)
    r = await world.client.post(
        msgs(world), headers=world.alice.headers, json={"txn_id": "ev1", "body": "z" * (size + 1)}
    )
    assert_error(r, 413, "M_TOO_LARGE")
    assert await snapshot(world.app) == before


# ---------------------------------------------------------------- registration with bad keys


@pytest.mark.parametrize(
    "public_key",
    [
        "",
        "not base64!!",
        "====",
        key_of(0),
        key_of(1),
        key_of(31),
        key_of(33),
        key_of(64),
        "ab" * 32,
        " " * 44,
    ],
)
async def test_bad_public_keys_create_nothing(app_env, public_key):
    app, client = app_env["app"], app_env["client"]
    before = await snapshot(app)
    r = await client.post(
        "/api/v1/agents",
        json={"handle": "zed", "public_key": public_key, "registration_token": app_env["token"]},
    )
    assert_error(r, 400, "M_INVALID_PARAM")
    assert await snapshot(app) == before


async def test_urlsafe_and_unpadded_keys_are_accepted(client, reg_token):
    _key, public = new_keypair()
    raw = base64.b64decode(public)
    r = await client.post(
        "/api/v1/agents",
        json={
            "handle": "urlsafe",
            "public_key": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
            "registration_token": reg_token,
        },
    )
    assert r.status_code == 201, r.text


# ---------------------------------------------------------------- signatures and nonces


@pytest.mark.parametrize(
    ("signature", "status"),
    [
        ("", 400),
        ("not base64!!", 400),
        (base64.b64encode(b"\x00" * 63).decode(), 400),
        (base64.b64encode(b"\x00" * 65).decode(), 400),
        (base64.b64encode(b"\x00" * 64).decode(), 403),
        ("forged", 403),
    ],
)
async def test_bad_signatures_are_refused(world, signature, status):
    r = await world.client.post("/api/v1/auth/challenge", json={"user_id": world.alice.user_id})
    nonce = r.json()["nonce"]
    if signature == "forged":
        other, _ = new_keypair()
        signature = sign(other, nonce)
    before = await snapshot(world.app, skip=("login_challenges",))
    r = await world.client.post(
        "/api/v1/auth/login", json={"user_id": world.alice.user_id, "nonce": nonce, "signature": signature}
    )
    assert_error(r, status)
    assert await snapshot(world.app, skip=("login_challenges",)) == before
    # a failed attempt costs the nonce
    r = await world.client.post(
        "/api/v1/auth/login",
        json={"user_id": world.alice.user_id, "nonce": nonce, "signature": sign(world.alice.key, nonce)},
    )
    assert_error(r, 403, "M_FORBIDDEN")


async def test_expired_and_replayed_nonces(settings_for):
    clock = FrozenClock()
    app = create_app(settings_for(), clock=clock, announce=lambda _text: None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            w = await make_world(app, client, app.state.first_start.registration_token)

            async def nonce() -> str:
                r = await client.post("/api/v1/auth/challenge", json={"user_id": w.alice.user_id})
                return str(r.json()["nonce"])

            async def login(n: str) -> httpx.Response:
                return await client.post(
                    "/api/v1/auth/login",
                    json={"user_id": w.alice.user_id, "nonce": n, "signature": sign(w.alice.key, n)},
                )

            used = await nonce()
            assert (await login(used)).status_code == 200
            expired = await nonce()
            clock.advance(app.state.settings.challenge_ttl_seconds + 1)
            before = await snapshot(app)
            for n in (used, expired, used):
                assert_error(await login(n), 403, "M_FORBIDDEN")
            assert_error(await login("clawlist-login:never-issued"), 403, "M_FORBIDDEN")
            r = await client.post(
                "/api/v1/auth/login", json={"user_id": w.alice.user_id, "nonce": "", "signature": "AAAA"}
            )
            assert_error(r, 400)
            assert await snapshot(app) == before


# ---------------------------------------------------------------- expired and revoked tokens


async def test_expired_and_revoked_tokens(settings_for):
    clock = FrozenClock()
    app = create_app(settings_for(), clock=clock, announce=lambda _text: None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            w = await make_world(app, client, app.state.first_start.registration_token)
            # revoked: bob logs out
            assert (await client.post("/api/v1/auth/logout", headers=w.bob.headers)).status_code == 200
            revoked_refresh = w.bob.refresh_token
            # expired: alice's access token after 15 minutes
            clock.advance(901)
            before = await snapshot(app)
            for agent in (w.alice, w.bob):
                r = await client.post(msgs(w), headers=agent.headers, json={"txn_id": "late", "body": "x"})
                assert_error(r, 401, "M_UNKNOWN_TOKEN")
                r = await client.get(msgs(w), headers=agent.headers)
                assert_error(r, 401, "M_UNKNOWN_TOKEN")
                r = await client.post("/api/v1/rooms", headers=agent.headers, json={"name": "late"})
                assert_error(r, 401, "M_UNKNOWN_TOKEN")
            r = await client.post("/api/v1/auth/refresh", json={"refresh_token": revoked_refresh})
            assert_error(r, 401, "M_UNKNOWN_TOKEN")
            assert await snapshot(app) == before


async def test_forged_jwts_are_refused(world, app_env):
    secret_claims = {
        "sub": world.alice.user_id,
        "sid": "nope",
        "knd": "agent",
        "scp": "full",
        "iat": 1,
        "exp": 4_000_000_000,
        "iss": SERVER,
    }
    real = jwt.decode(world.alice.access_token, options={"verify_signature": False})
    forged = [
        jwt.encode(
            {**real, "sub": world.bob.user_id},
            "not-the-server-secret-but-long-enough-for-hs256",
            algorithm="HS256",
        ),
        jwt.encode(secret_claims, "not-the-server-secret-but-long-enough-for-hs256", algorithm="HS256"),
        jwt.encode({**real, "sub": world.bob.user_id}, key="", algorithm="none"),
        world.alice.access_token[:-4] + ("AAAA" if not world.alice.access_token.endswith("AAAA") else "BBBB"),
        world.alice.access_token + ".extra",
        "a.b.c",
        "\u00e9t\u00e9",
    ]
    before = await snapshot(world.app)
    for token in forged:
        r = await world.client.get(
            "/api/v1/auth/whoami", headers={"Authorization": f"Bearer {token}".encode()}
        )
        assert_error(r, 401, "M_UNKNOWN_TOKEN")
        r = await world.client.post(
            msgs(world),
            headers={"Authorization": f"Bearer {token}".encode()},
            json={"txn_id": "f", "body": "x"},
        )
        assert_error(r, 401, "M_UNKNOWN_TOKEN")
    assert await snapshot(world.app) == before


# ---------------------------------------------------------------- power levels, with effects checked


async def test_member_cannot_act_above_its_power_level(world):
    w = world
    alice_id = w.alice.user_id

    async def members() -> dict[str, str]:
        r = await w.client.get(f"/api/v1/rooms/{p(w.room)}/members", headers=w.alice.headers)
        assert r.status_code == 200, r.text
        return {e["state_key"]: e["content"]["membership"] for e in r.json()["chunk"]}

    async def power_levels() -> dict[str, Any]:
        r = await w.client.get(
            f"/api/v1/rooms/{p(w.room)}/state/m.room.power_levels", headers=w.alice.headers
        )
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    before_members, before_levels = await members(), await power_levels()
    assert before_members[alice_id] == "join"
    for action in ("kick", "ban"):
        r = await w.client.post(
            f"/api/v1/rooms/{p(w.room)}/{action}", headers=w.bob.headers, json={"user_id": alice_id}
        )
        assert_error(r, 403, "M_FORBIDDEN")
    new_levels = json.loads(json.dumps(before_levels))
    new_levels["users"][w.bob.user_id] = 100
    r = await w.client.put(
        f"/api/v1/rooms/{p(w.room)}/state/m.room.power_levels",
        headers=w.bob.headers,
        json={"content": new_levels},
    )
    assert_error(r, 403, "M_FORBIDDEN")
    assert await members() == before_members
    assert await power_levels() == before_levels

    # The owner makes bob a moderator (50): bob still cannot kick the owner (100) or raise himself.
    levels = json.loads(json.dumps(before_levels))
    levels["users"][w.bob.user_id] = 50
    r = await w.client.put(
        f"/api/v1/rooms/{p(w.room)}/state/m.room.power_levels",
        headers=w.alice.headers,
        json={"content": levels},
    )
    assert r.status_code == 200, r.text
    for action in ("kick", "ban"):
        r = await w.client.post(
            f"/api/v1/rooms/{p(w.room)}/{action}", headers=w.bob.headers, json={"user_id": alice_id}
        )
        assert_error(r, 403, "M_FORBIDDEN")
    levels_now = await power_levels()
    raised = json.loads(json.dumps(levels_now))
    raised["users"][w.bob.user_id] = 100
    r = await w.client.put(
        f"/api/v1/rooms/{p(w.room)}/state/m.room.power_levels",
        headers=w.bob.headers,
        json={"content": raised},
    )
    assert_error(r, 403, "M_FORBIDDEN")
    demoted = json.loads(json.dumps(levels_now))
    demoted["users"][alice_id] = 0
    r = await w.client.put(
        f"/api/v1/rooms/{p(w.room)}/state/m.room.power_levels",
        headers=w.bob.headers,
        json={"content": demoted},
    )
    assert_error(r, 403, "M_FORBIDDEN")
    assert await power_levels() == levels_now
    assert (await members())[alice_id] == "join"


# ---------------------------------------------------------------- not in the room, with effects checked


async def test_posting_to_a_room_one_is_not_in(world):
    w = world

    async def count() -> int:
        r = await w.client.get(msgs(w), headers=w.alice.headers, params={"limit": 1000})
        assert r.status_code == 200, r.text
        return len(r.json()["chunk"])

    before = await count()
    r = await w.client.post(msgs(w), headers=w.carol.headers, json={"txn_id": "c1", "body": "sneak"})
    assert_error(r, 403, "M_FORBIDDEN")
    # private room: outsiders cannot read or post
    r = await w.client.post("/api/v1/rooms", headers=w.alice.headers, json={"name": "private"})
    private = r.json()["room_id"]
    r = await w.client.get(f"/api/v1/rooms/{p(private)}/messages", headers=w.carol.headers)
    assert_error(r, 403, "M_FORBIDDEN")
    r = await w.client.post(f"/api/v1/rooms/{p(private)}/join", headers=w.carol.headers)
    assert_error(r, 403, "M_FORBIDDEN")
    r = await w.client.post(
        f"/api/v1/rooms/{p(private)}/messages", headers=w.carol.headers, json={"txn_id": "c2", "body": "x"}
    )
    assert_error(r, 403, "M_FORBIDDEN")
    # after leaving, bob can no longer post
    assert (await w.client.post(f"/api/v1/rooms/{p(w.room)}/leave", headers=w.bob.headers)).status_code == 200
    after_leave = await count()
    r = await w.client.post(msgs(w), headers=w.bob.headers, json={"txn_id": "b9", "body": "gone"})
    assert_error(r, 403, "M_FORBIDDEN")
    assert await count() == after_leave == before + 1  # only the leave event was added


# ---------------------------------------------------------------- duplicate handles


async def test_duplicate_handles_differing_in_case_create_nothing(app_env):
    app, client, token = app_env["app"], app_env["client"], app_env["token"]
    await register(client, "dupe", token)
    before = await snapshot(app)
    for handle in ("DUPE", "Dupe", "dUpE", " dupe "):
        _key, public = new_keypair()
        r = await client.post(
            "/api/v1/agents", json={"handle": handle, "public_key": public, "registration_token": token}
        )
        if handle.strip() != handle:  # surrounding spaces are not a valid handle, not a silent strip
            assert_error(r, 400, "M_INVALID_USERNAME")
            continue
        assert_error(r, 409, "M_USER_IN_USE")
    assert await snapshot(app) == before


# ---------------------------------------------------------------- valid pagination still works


async def test_valid_pagination_round_trip(world):
    w = world
    r = await w.client.get(msgs(w), headers=w.alice.headers, params={"dir": "b", "limit": 1})
    assert r.status_code == 200, r.text
    first = r.json()
    assert len(first["chunk"]) == 1 and first["end"]
    r = await w.client.get(
        msgs(w), headers=w.alice.headers, params={"dir": "b", "limit": 1, "from": first["end"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["chunk"][0]["event_id"] != first["chunk"][0]["event_id"]
    r = await w.client.get(msgs(w), headers=w.alice.headers, params={"limit": 10**6})
    assert r.status_code == 200, r.text
