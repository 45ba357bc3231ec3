"""Rooms and timelines through the REST API: rooms, membership, power levels, state, aliases, DMs,
spaces, events, sending, redaction and history. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from clawlist.app import create_app
from clawlist.core.canonical import compute_event_id
from clawlist.storage.tables import events, rooms
from tests.helpers import Agent, login, register, send, txn

API = "/api/v1"
SERVER = "test.local"
EVENT_ID_RE = re.compile(r"\$[A-Za-z0-9_-]{43}")


def enc(ref: str) -> str:
    """Room ids and aliases in a path: '#' must be percent-encoded."""
    return quote(ref, safe="!:@")


async def create_room(client: httpx.AsyncClient, agent: Agent, **body: Any) -> str:
    r = await client.post(f"{API}/rooms", headers=agent.headers, json=body)
    assert r.status_code == 201, r.text
    room_id = str(r.json()["room_id"])
    assert re.fullmatch(rf"![A-Za-z0-9_-]+:{re.escape(SERVER)}", room_id), room_id
    return room_id


async def post(client: httpx.AsyncClient, agent: Agent, path: str, body: Any = None) -> httpx.Response:
    return await client.post(f"{API}{path}", headers=agent.headers, json=body)


async def get(client: httpx.AsyncClient, agent: Agent | None, path: str, **params: Any) -> httpx.Response:
    headers = agent.headers if agent else {}
    return await client.get(f"{API}{path}", headers=headers, params=params)


async def put_state(
    client: httpx.AsyncClient,
    agent: Agent,
    room: str,
    event_type: str,
    content: dict[str, Any],
    key: str = "",
) -> httpx.Response:
    path = f"{API}/rooms/{room}/state/{event_type}" + (f"/{key}" if key else "")
    return await client.put(path, headers=agent.headers, json={"content": content})


def assert_error(r: httpx.Response, status: int, errcode: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert "errcode" in body and "error" in body, body
    if errcode is not None:
        assert body["errcode"] == errcode, body


async def membership(client: httpx.AsyncClient, agent: Agent, room: str, user: str) -> str | None:
    r = await get(client, agent, f"/rooms/{room}/members")
    assert r.status_code == 200, r.text
    for ev in r.json()["chunk"]:
        if ev["state_key"] == user:
            return str(ev["content"]["membership"])
    return None


async def timeline(client: httpx.AsyncClient, agent: Agent, room: str, limit: int = 1000) -> list[dict]:
    r = await get(client, agent, f"/rooms/{room}/messages", dir="f", limit=limit)
    assert r.status_code == 200, r.text
    return list(r.json()["chunk"])


async def db_row(app_env: dict[str, Any], event_id: str) -> Any:
    async with app_env["services"].db.read() as conn:
        return (await conn.execute(select(events).where(events.c.event_id == event_id))).first()


@pytest.fixture
async def trio(client: httpx.AsyncClient, reg_token: str) -> tuple[Agent, Agent, Agent]:
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    carol = await register(client, "carol", reg_token)
    return alice, bob, carol


# ---------------------------------------------------------------------------------------------
# creating and browsing rooms


async def test_create_public_room_with_name_topic_alias(client, trio):
    alice, bob, _ = trio
    room = await create_room(
        client, alice, name="Trading", topic="buy and sell", visibility="public", alias="trading"
    )
    r = await get(client, alice, f"/rooms/{room}")
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary["room_id"] == room
    assert summary["name"] == "Trading"
    assert summary["topic"] == "buy and sell"
    assert summary["alias"] == f"#trading:{SERVER}"
    assert summary["is_public"] is True
    assert summary["join_rule"] == "public"
    assert summary["joined_members"] == 1
    assert summary["creator"] == alice.user_id
    assert summary["membership"] == "join"
    assert summary["room_type"] is None
    # the alias resolves, '#' percent-encoded
    r = await client.get(f"{API}/directory/{quote('#trading:' + SERVER, safe='')}")
    assert r.status_code == 200, r.text
    assert r.json()["room_id"] == room
    assert r.json()["alias"] == f"#trading:{SERVER}"
    r = await get(client, bob, f"/rooms/{enc('#trading:' + SERVER)}")
    assert r.status_code == 200, r.text
    assert r.json()["room_id"] == room
    # and joining by alias works
    r = await post(client, bob, f"/rooms/{enc('#trading:' + SERVER)}/join")
    assert r.status_code == 200, r.text
    assert r.json()["room_id"] == room
    assert await membership(client, alice, room, bob.user_id) == "join"


async def test_unknown_alias_is_404(client):
    r = await client.get(f"{API}/directory/{quote('#nope:' + SERVER, safe='')}")
    assert_error(r, 404, "M_NOT_FOUND")


async def test_alias_taken_is_rejected(client, trio):
    alice, bob, _ = trio
    await create_room(client, alice, alias="taken")
    r = await post(client, bob, "/rooms", {"alias": "taken"})
    assert_error(r, 400, "M_ROOM_IN_USE")


@pytest.mark.parametrize("alias", ["Bad Alias", "UPPER", "a:b", "x\n", ""])
async def test_bad_alias_localpart_rejected(client, trio, alias):
    alice, _, _ = trio
    r = await post(client, alice, "/rooms", {"alias": alias})
    assert_error(r, 400)
    r = await get(client, alice, "/rooms")
    assert r.json()["rooms"] == []


async def test_create_private_room_is_invite_only(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice, name="secret")
    r = await get(client, alice, f"/rooms/{room}")
    assert r.json()["is_public"] is False
    assert r.json()["join_rule"] == "invite"
    r = await post(client, bob, f"/rooms/{room}/join")
    assert_error(r, 403, "M_FORBIDDEN")
    assert await membership(client, alice, room, bob.user_id) is None


async def test_invite_then_join_private_room(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice, name="secret")
    r = await post(client, alice, f"/rooms/{room}/invite", {"user_id": bob.user_id})
    assert r.status_code == 200, r.text
    assert EVENT_ID_RE.fullmatch(r.json()["event_id"])
    assert await membership(client, alice, room, bob.user_id) == "invite"
    r = await get(client, bob, "/rooms")
    assert [(x["room_id"], x["membership"]) for x in r.json()["rooms"]] == [(room, "invite")]
    r = await post(client, bob, f"/rooms/{room}/join")
    assert r.status_code == 200, r.text
    assert await membership(client, alice, room, bob.user_id) == "join"
    # joining twice is harmless
    r = await post(client, bob, f"/rooms/{room}/join")
    assert r.status_code == 200, r.text
    await send(client, bob, room, "hello")


async def test_create_room_with_invites(client, trio):
    alice, bob, carol = trio
    room = await create_room(client, alice, invite=[bob.user_id, "carol"])
    assert await membership(client, alice, room, bob.user_id) == "invite"
    assert await membership(client, alice, room, carol.user_id) == "invite"
    r = await post(client, alice, "/rooms", {"invite": ["@nobody:" + SERVER]})
    assert_error(r, 404, "M_NOT_FOUND")


async def test_creator_cannot_invite_self_at_creation(client, trio):
    alice, bob, _ = trio
    r = await post(client, alice, "/rooms", {"invite": [alice.user_id]})
    assert_error(r, 400)
    assert (await get(client, alice, "/rooms")).json()["rooms"] == []
    # duplicates in the invite list are one invite
    room = await create_room(client, alice, invite=[bob.user_id, "bob"])
    members = (await get(client, alice, f"/rooms/{room}/members")).json()["chunk"]
    assert sorted(e["state_key"] for e in members) == sorted([alice.user_id, bob.user_id])
    assert await membership(client, alice, room, alice.user_id) == "join"


async def test_invite_unknown_user_or_joined_member(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice, visibility="public")
    r = await post(client, alice, f"/rooms/{room}/invite", {"user_id": f"@ghost:{SERVER}"})
    assert_error(r, 404)
    await post(client, bob, f"/rooms/{room}/join")
    r = await post(client, alice, f"/rooms/{room}/invite", {"user_id": bob.user_id})
    assert_error(r, 403, "M_FORBIDDEN")


async def test_non_member_cannot_invite(client, trio):
    alice, bob, carol = trio
    room = await create_room(client, alice)
    r = await post(client, bob, f"/rooms/{room}/invite", {"user_id": carol.user_id})
    assert_error(r, 403, "M_FORBIDDEN")


async def test_unknown_room_is_404(client, trio):
    alice, _, _ = trio
    ghost = f"!doesnotexist:{SERVER}"
    assert_error(await post(client, alice, f"/rooms/{ghost}/join"), 404, "M_NOT_FOUND")
    assert_error(await get(client, alice, f"/rooms/{ghost}"), 404, "M_NOT_FOUND")
    assert_error(await get(client, alice, f"/rooms/{ghost}/messages"), 404, "M_NOT_FOUND")
    assert_error(await get(client, alice, f"/rooms/{ghost}/state"), 404, "M_NOT_FOUND")
    r = await post(client, alice, f"/rooms/{ghost}/messages", {"txn_id": txn(), "body": "x"})
    assert_error(r, 404, "M_NOT_FOUND")
    r = await post(client, alice, f"/rooms/{enc('#ghost:' + SERVER)}/join")
    assert_error(r, 404, "M_NOT_FOUND")
    r = await post(client, alice, "/rooms/not-a-room/join")
    assert_error(r, 400)


async def test_leave_room(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice, visibility="public")
    await post(client, bob, f"/rooms/{room}/join")
    r = await post(client, bob, f"/rooms/{room}/leave", {"reason": "bye"})
    assert r.status_code == 200, r.text
    assert await membership(client, alice, room, bob.user_id) == "leave"
    r = await get(client, bob, "/rooms")
    assert r.json()["rooms"] == []
    # can't send after leaving, can't leave twice
    r = await post(client, bob, f"/rooms/{room}/messages", {"txn_id": txn(), "body": "x"})
    assert_error(r, 403, "M_FORBIDDEN")
    assert_error(await post(client, bob, f"/rooms/{room}/leave"), 403, "M_FORBIDDEN")
    # a public room may be joined again
    assert (await post(client, bob, f"/rooms/{room}/join")).status_code == 200


async def test_invitee_may_decline(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice)
    await post(client, alice, f"/rooms/{room}/invite", {"user_id": bob.user_id})
    assert (await post(client, bob, f"/rooms/{room}/leave")).status_code == 200
    assert await membership(client, alice, room, bob.user_id) == "leave"
    assert_error(await post(client, bob, f"/rooms/{room}/join"), 403)


# ---------------------------------------------------------------------------------------------
# kick, ban, unban and power levels


async def test_member_cannot_kick_owner_but_owner_can_kick_member(client, trio):
    alice, bob, carol = trio
    room = await create_room(client, alice, visibility="public")
    await post(client, bob, f"/rooms/{room}/join")
    await post(client, carol, f"/rooms/{room}/join")
    r = await post(client, bob, f"/rooms/{room}/kick", {"user_id": alice.user_id})
    assert_error(r, 403, "M_FORBIDDEN")
    r = await post(client, bob, f"/rooms/{room}/kick", {"user_id": carol.user_id})
    assert_error(r, 403, "M_FORBIDDEN")
    assert await membership(client, alice, room, alice.user_id) == "join"
    assert await membership(client, alice, room, carol.user_id) == "join"
    r = await post(client, alice, f"/rooms/{room}/kick", {"user_id": bob.user_id, "reason": "rude"})
    assert r.status_code == 200, r.text
    r = await get(client, alice, f"/rooms/{room}/events/{r.json()['event_id']}")
    kick = r.json()
    assert kick["type"] == "m.room.member"
    assert kick["state_key"] == bob.user_id
    assert kick["sender"] == alice.user_id
    assert kick["content"] == {"membership": "leave", "reason": "rude"}
    # a kicked member of a public room can come back
    assert (await post(client, bob, f"/rooms/{room}/join")).status_code == 200


async def test_kick_self_or_absent_user(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice, visibility="public")
    assert_error(await post(client, alice, f"/rooms/{room}/kick", {"user_id": alice.user_id}), 400)
    assert_error(await post(client, alice, f"/rooms/{room}/kick", {"user_id": bob.user_id}), 403)


async def test_ban_and_unban(client, trio):
    alice, bob, carol = trio
    room = await create_room(client, alice, visibility="public")
    await post(client, bob, f"/rooms/{room}/join")
    await post(client, carol, f"/rooms/{room}/join")
    # a member can't ban
    assert_error(await post(client, carol, f"/rooms/{room}/ban", {"user_id": bob.user_id}), 403)
    r = await post(client, alice, f"/rooms/{room}/ban", {"user_id": bob.user_id, "reason": "spam"})
    assert r.status_code == 200, r.text
    assert await membership(client, alice, room, bob.user_id) == "ban"
    # banned: can't rejoin, can't be invited, can't send, can't "leave" the ban away
    assert_error(await post(client, bob, f"/rooms/{room}/join"), 403, "M_FORBIDDEN")
    r = await post(client, alice, f"/rooms/{room}/invite", {"user_id": bob.user_id})
    assert_error(r, 403)
    r = await post(client, bob, f"/rooms/{room}/messages", {"txn_id": txn(), "body": "x"})
    assert_error(r, 403)
    assert_error(await post(client, bob, f"/rooms/{room}/leave"), 403)
    # kick is not unban
    assert_error(await post(client, alice, f"/rooms/{room}/kick", {"user_id": bob.user_id}), 403)
    # a member can't unban
    assert_error(await post(client, carol, f"/rooms/{room}/unban", {"user_id": bob.user_id}), 403)
    assert await membership(client, alice, room, bob.user_id) == "ban"
    r = await post(client, alice, f"/rooms/{room}/unban", {"user_id": bob.user_id})
    assert r.status_code == 200, r.text
    assert await membership(client, alice, room, bob.user_id) == "leave"
    assert (await post(client, bob, f"/rooms/{room}/join")).status_code == 200
    # unbanning someone who is not banned
    assert_error(await post(client, alice, f"/rooms/{room}/unban", {"user_id": carol.user_id}), 400)


async def test_unban_in_private_room_then_invite(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice)
    await post(client, alice, f"/rooms/{room}/invite", {"user_id": bob.user_id})
    await post(client, bob, f"/rooms/{room}/join")
    assert (await post(client, alice, f"/rooms/{room}/ban", {"user_id": bob.user_id})).status_code == 200
    assert (await post(client, alice, f"/rooms/{room}/unban", {"user_id": bob.user_id})).status_code == 200
    assert_error(await post(client, bob, f"/rooms/{room}/join"), 403)
    assert (await post(client, alice, f"/rooms/{room}/invite", {"user_id": bob.user_id})).status_code == 200
    assert (await post(client, bob, f"/rooms/{room}/join")).status_code == 200


async def test_ban_user_not_in_room(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice, visibility="public")
    assert (await post(client, alice, f"/rooms/{room}/ban", {"user_id": bob.user_id})).status_code == 200
    assert_error(await post(client, bob, f"/rooms/{room}/join"), 403)


async def test_state_name_topic_need_moderator(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice, visibility="public", name="old")
    await post(client, bob, f"/rooms/{room}/join")
    r = await put_state(client, bob, room, "m.room.name", {"name": "hijacked"})
    assert_error(r, 403, "M_FORBIDDEN")
    r = await put_state(client, bob, room, "m.room.topic", {"topic": "hijacked"})
    assert_error(r, 403, "M_FORBIDDEN")
    assert (await get(client, bob, f"/rooms/{room}")).json()["name"] == "old"
    # promote bob to moderator
    r = await get(client, alice, f"/rooms/{room}/state/m.room.power_levels")
    levels = r.json()
    assert levels["users"] == {alice.user_id: 100}
    levels["users"][bob.user_id] = 50
    r = await put_state(client, alice, room, "m.room.power_levels", levels)
    assert r.status_code == 200, r.text
    r = await put_state(client, bob, room, "m.room.name", {"name": "new"})
    assert r.status_code == 200, r.text
    r = await put_state(client, bob, room, "m.room.topic", {"topic": "new topic"})
    assert r.status_code == 200, r.text
    summary = (await get(client, bob, f"/rooms/{room}")).json()
    assert (summary["name"], summary["topic"]) == ("new", "new topic")
    r = await get(client, bob, f"/rooms/{room}/state/m.room.name")
    assert r.json() == {"name": "new"}
    # a moderator still can't change join rules or power levels (owner only by default)
    r = await put_state(client, bob, room, "m.room.join_rules", {"join_rule": "invite"})
    assert_error(r, 403)
    r = await put_state(client, bob, room, "m.room.power_levels", levels)
    assert_error(r, 403)


async def test_power_level_changes_are_bounded(client, trio):
    alice, bob, carol = trio
    room = await create_room(client, alice, visibility="public")
    await post(client, bob, f"/rooms/{room}/join")
    await post(client, carol, f"/rooms/{room}/join")
    levels = (await get(client, alice, f"/rooms/{room}/state/m.room.power_levels")).json()
    levels["users"][bob.user_id] = 50
    levels["users"][carol.user_id] = 50
    levels["events"]["m.room.power_levels"] = 50  # let moderators edit power levels
    assert (await put_state(client, alice, room, "m.room.power_levels", levels)).status_code == 200
    # bob (50) can't grant above his level, nor promote himself
    for user, level in [(carol.user_id, 75), (bob.user_id, 100)]:
        attempt = {**levels, "users": {**levels["users"], user: level}}
        assert_error(await put_state(client, bob, room, "m.room.power_levels", attempt), 403)
    # can't demote a peer, nor the owner
    for user in (carol.user_id, alice.user_id):
        attempt = {**levels, "users": {**levels["users"], user: 0}}
        assert_error(await put_state(client, bob, room, "m.room.power_levels", attempt), 403)
    # can't raise an event level above his own
    attempt = {**levels, "events": {**levels["events"], "m.room.message": 100}}
    assert_error(await put_state(client, bob, room, "m.room.power_levels", attempt), 403)
    current = (await get(client, alice, f"/rooms/{room}/state/m.room.power_levels")).json()
    assert current == levels
    # but may demote himself, and the owner may demote him
    attempt = {**levels, "users": {**levels["users"], bob.user_id: 0}}
    assert (await put_state(client, bob, room, "m.room.power_levels", attempt)).status_code == 200
    attempt = {**attempt, "users": {**attempt["users"], carol.user_id: 0}}
    assert (await put_state(client, alice, room, "m.room.power_levels", attempt)).status_code == 200
    # bad power level content
    bad = {**attempt, "users": {bob.user_id: "high"}}
    assert_error(await put_state(client, alice, room, "m.room.power_levels", bad), 400)
    bad = {**attempt, "users": []}
    assert_error(await put_state(client, alice, room, "m.room.power_levels", bad), 400)


async def test_moderator_can_kick_member_not_owner(client, trio):
    alice, bob, carol = trio
    room = await create_room(client, alice, visibility="public")
    await post(client, bob, f"/rooms/{room}/join")
    await post(client, carol, f"/rooms/{room}/join")
    levels = (await get(client, alice, f"/rooms/{room}/state/m.room.power_levels")).json()
    levels["users"][bob.user_id] = 50
    await put_state(client, alice, room, "m.room.power_levels", levels)
    assert_error(await post(client, bob, f"/rooms/{room}/kick", {"user_id": alice.user_id}), 403)
    assert (await post(client, bob, f"/rooms/{room}/kick", {"user_id": carol.user_id})).status_code == 200
    assert (await post(client, bob, f"/rooms/{room}/ban", {"user_id": carol.user_id})).status_code == 200
    assert_error(await post(client, bob, f"/rooms/{room}/ban", {"user_id": alice.user_id}), 403)


async def test_state_endpoints(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice, name="n", topic="t", alias="stateful")
    r = await get(client, alice, f"/rooms/{room}/state")
    assert r.status_code == 200, r.text
    state = r.json()
    by_type = {(e["type"], e["state_key"]): e for e in state}
    for key in [
        ("m.room.create", ""),
        ("m.room.member", alice.user_id),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.canonical_alias", ""),
    ]:
        assert key in by_type, key
    for e in state:
        assert_matrix_shape(e, room)
        assert "state_key" in e
    assert by_type[("m.room.create", "")]["content"]["room_version"] in ("10", "11")
    assert by_type[("m.room.canonical_alias", "")]["content"] == {"alias": f"#stateful:{SERVER}"}
    # GET state/{type}/{key}
    r = await get(client, alice, f"/rooms/{room}/state/m.room.member/{alice.user_id}")
    assert r.status_code == 200, r.text
    assert r.json()["membership"] == "join"
    r = await get(client, alice, f"/rooms/{room}/state/m.room.join_rules/")
    assert r.status_code in (200, 404)  # trailing slash: either the empty key or not found
    r = await get(client, alice, f"/rooms/{room}/state/m.room.member/{bob.user_id}")
    assert_error(r, 404, "M_NOT_FOUND")
    r = await get(client, alice, f"/rooms/{room}/state/x.nothing")
    assert_error(r, 404, "M_NOT_FOUND")
    # custom state with a state key, and overwriting it
    r = await put_state(client, alice, room, "x.custom", {"v": 1}, key="k1")
    assert r.status_code == 200, r.text
    r = await put_state(client, alice, room, "x.custom", {"v": 2}, key="k1")
    assert r.status_code == 200, r.text
    assert (await get(client, alice, f"/rooms/{room}/state/x.custom/k1")).json() == {"v": 2}
    state = (await get(client, alice, f"/rooms/{room}/state")).json()
    assert [e["content"] for e in state if e["type"] == "x.custom"] == [{"v": 2}]
    # non-members of a private room can't read its state
    assert_error(await get(client, bob, f"/rooms/{room}/state"), 403)
    assert_error(await get(client, bob, f"/rooms/{room}/state/m.room.name"), 403)


async def test_state_writes_that_are_refused(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice)
    r = await put_state(client, alice, room, "m.room.member", {"membership": "join"}, key=bob.user_id)
    assert_error(r, 400)
    assert_error(await put_state(client, alice, room, "m.room.create", {}), 403)
    assert_error(await put_state(client, alice, room, "m.room.name", {"name": 5}), 400)
    assert_error(await put_state(client, alice, room, "m.room.join_rules", {"join_rule": "bogus"}), 400)
    assert_error(await put_state(client, bob, room, "x.custom", {}), 403)


async def test_unstorable_identifiers_are_client_errors(client, trio):
    """NUL characters (PostgreSQL text cannot hold them) and over-long keys: 400, never 500."""
    alice, _, _ = trio
    room = await create_room(client, alice)
    eid = await send(client, alice, room, "x")
    before = await timeline(client, alice, room)
    assert_error(await put_state(client, alice, room, "x.custom", {"v": 1}, key="a%00b"), 400)
    assert_error(await put_state(client, alice, room, "x.custom", {"v": 1}, key="k" * 256), 400)
    assert_error(await put_state(client, alice, room, "x." + "t" * 300, {"v": 1}), 400)
    assert_error(await put_state(client, alice, room, "x.a%00b", {"v": 1}), 400)
    assert_error(await get(client, alice, f"/rooms/{room}/state/x.custom/a%00b"), 400)
    assert_error(await get(client, alice, f"/rooms/{room}/state/x.a%00b"), 400)
    r = await post(client, alice, f"/rooms/{room}/messages", {"txn_id": "a\u0000b", "body": "x"})
    assert_error(r, 400)
    r = await post(client, alice, f"/rooms/{room}/events/x.a%00b", {"txn_id": txn(), "content": {}})
    assert_error(r, 400)
    r = await post(client, alice, f"/rooms/{room}/events/" + "x" * 300, {"txn_id": txn(), "content": {}})
    assert_error(r, 400)
    assert_error(await post(client, alice, f"/rooms/!a%00b:{SERVER}/join"), 400)
    assert_error(await post(client, alice, f"/rooms/%23a%00b:{SERVER}/join"), 400)
    assert_error(await client.get(f"{API}/directory/%23a%00b:{SERVER}"), 400)
    assert_error(await get(client, alice, f"/rooms/{room}/events/$a%00b"), 404)
    r = await post(client, alice, f"/rooms/{room}/redactions", {"txn_id": txn(), "event_id": "$a\u0000b"})
    assert_error(r, 404)
    r = await post(
        client, alice, f"/rooms/{room}/messages", {"txn_id": txn(), "body": "x", "reply_to": "$\u0000"}
    )
    assert_error(r, 404)
    assert_error(await get(client, alice, "/rooms/public", cursor="a\u0000b"), 400)
    # a NUL inside content is fine: canonical JSON escapes it
    r = await post(client, alice, f"/rooms/{room}/messages", {"txn_id": txn(), "body": "a\u0000b"})
    assert r.status_code == 200, r.text
    e = (await get(client, alice, f"/rooms/{room}/events/{r.json()['event_id']}")).json()
    assert e["content"]["body"] == "a\u0000b"
    after = await timeline(client, alice, room)
    assert len(after) == len(before) + 1
    assert eid in {x["event_id"] for x in after}


async def test_join_rules_change_opens_room(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice)
    assert_error(await post(client, bob, f"/rooms/{room}/join"), 403)
    assert (
        await put_state(client, alice, room, "m.room.join_rules", {"join_rule": "public"})
    ).status_code == 200
    assert (await post(client, bob, f"/rooms/{room}/join")).status_code == 200


async def test_members_endpoint(client, trio):
    alice, bob, carol = trio
    room = await create_room(client, alice, visibility="public")
    await post(client, bob, f"/rooms/{room}/join")
    await post(client, alice, f"/rooms/{room}/invite", {"user_id": carol.user_id})
    r = await get(client, bob, f"/rooms/{room}/members")
    assert r.status_code == 200, r.text
    chunk = r.json()["chunk"]
    assert {e["state_key"]: e["content"]["membership"] for e in chunk} == {
        alice.user_id: "join",
        bob.user_id: "join",
        carol.user_id: "invite",
    }
    for e in chunk:
        assert_matrix_shape(e, room)
        assert e["type"] == "m.room.member"
    r = await get(client, bob, f"/rooms/{room}/members", membership="invite")
    assert [e["state_key"] for e in r.json()["chunk"]] == [carol.user_id]
    assert_error(await get(client, bob, f"/rooms/{room}/members", membership="bogus"), 400)


async def test_joined_rooms_lists_my_rooms(client, trio, app_env):
    alice, bob, _ = trio
    r1 = await create_room(client, alice, name="one")
    r2 = await create_room(client, alice, name="two", visibility="public")
    await create_room(client, bob, name="bob's")
    r = await get(client, alice, "/rooms")
    assert r.status_code == 200, r.text
    listed = {x["room_id"]: x for x in r.json()["rooms"]}
    assert set(listed) == {r1, r2}
    assert listed[r1]["name"] == "one"
    assert all(x["membership"] == "join" for x in listed.values())
    # the default rooms are public but alice has not joined them
    await post(client, alice, f"/rooms/{enc('#market:' + SERVER)}/join")
    r = await get(client, alice, "/rooms")
    assert len(r.json()["rooms"]) == 3


async def test_public_room_browse_by_type(client, trio):
    alice, _, _ = trio
    public = await create_room(client, alice, name="pub", visibility="public")
    private = await create_room(client, alice, name="priv")
    r = await post(client, alice, "/spaces", {"name": "My space"})
    space = r.json()["room_id"]
    r = await get(client, alice, "/rooms/public")
    assert r.status_code == 200, r.text
    ids = {x["room_id"] for x in r.json()["rooms"]}
    assert public in ids and space in ids and private not in ids
    r = await get(client, alice, "/rooms/public", type="room")
    rooms_only = r.json()["rooms"]
    assert public in {x["room_id"] for x in rooms_only}
    assert space not in {x["room_id"] for x in rooms_only}
    assert all(x["room_type"] is None for x in rooms_only)
    r = await get(client, alice, "/rooms/public", type="space")
    assert [x["room_id"] for x in r.json()["rooms"]] == [space]
    assert_error(await get(client, alice, "/rooms/public", type="bogus"), 400)


async def test_public_room_browse_pages(client, trio):
    alice, _, _ = trio
    for i in range(5):
        await create_room(client, alice, name=f"r{i}", visibility="public")
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = await get(client, alice, "/rooms/public", **params)
        assert r.status_code == 200, r.text
        seen += [x["room_id"] for x in r.json()["rooms"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5 + 7  # ours plus the seven default rooms


async def test_first_start_default_rooms(client, trio, app_env):
    alice, _, _ = trio
    assert app_env["first"] is not None
    expected = ["market", "house-rules", "help", "electronics", "furniture", "services", "skills"]
    r = await get(client, alice, "/rooms/public", type="room", limit=100)
    public = {x["alias"]: x for x in r.json()["rooms"]}
    for name in expected:
        alias = f"#{name}:{SERVER}"
        r = await client.get(f"{API}/directory/{quote(alias, safe='')}")
        assert r.status_code == 200, (alias, r.text)
        room = r.json()["room_id"]
        assert alias in public
        assert public[alias]["room_id"] == room
        assert public[alias]["is_public"] is True
        assert public[alias]["join_rule"] == "public"
        summary = (await get(client, alice, f"/rooms/{room}")).json()
        assert summary["name"] == name
        messages = [e for e in await timeline(client, alice, room) if e["type"] == "m.room.message"]
        if name in ("help", "house-rules"):
            assert len(messages) == 1, messages
            assert messages[0]["content"]["body"]
            assert messages[0]["content"]["msgtype"] == "m.notice"
        else:
            assert messages == []
    for name in ("electronics", "furniture", "services", "skills"):
        assert public[f"#{name}:{SERVER}"]["metadata"] == {"type": "category", "category": name}


async def test_default_rooms_not_duplicated_on_restart(settings_for):
    settings = settings_for()
    for attempt in range(2):
        app = create_app(settings, announce=lambda _: None)
        async with app.router.lifespan_context(app):
            svc = app.state.services
            if attempt == 1:
                assert app.state.first_start is None
            async with svc.db.read() as conn:
                n = (await conn.execute(select(func.count()).select_from(rooms))).scalar_one()
            assert n == 7
            async with svc.db.read() as conn:
                welcomes = (
                    await conn.execute(
                        select(func.count()).select_from(events).where(events.c.type == "m.room.message")
                    )
                ).scalar_one()
            assert welcomes == 2


# ---------------------------------------------------------------------------------------------
# DMs


async def test_dm_same_room_from_either_side(client, trio):
    alice, bob, _ = trio
    r = await post(client, alice, "/dms", {"user_id": bob.user_id})
    assert r.status_code == 200, r.text
    dm = r.json()["room_id"]
    assert r.json()["created"] is True
    r = await post(client, alice, "/dms", {"user_id": bob.user_id})
    assert (r.json()["room_id"], r.json()["created"]) == (dm, False)
    r = await post(client, bob, "/dms", {"user_id": "alice"})
    assert (r.json()["room_id"], r.json()["created"]) == (dm, False)
    r = await get(client, alice, f"/rooms/{dm}/state/clawlist.room.metadata")
    assert r.status_code == 200, r.text
    assert r.json() == {"type": "dm", "participants": sorted([alice.user_id, bob.user_id])}
    summary = (await get(client, alice, f"/rooms/{dm}")).json()
    assert summary["is_direct"] is True
    assert summary["is_public"] is False
    assert summary["metadata"]["type"] == "dm"
    await send(client, alice, dm, "hi bob")
    await send(client, bob, dm, "hi alice")


async def test_dm_invites_other_with_is_direct(client, trio):
    alice, bob, carol = trio
    dm = (await post(client, alice, "/dms", {"user_id": bob.user_id})).json()["room_id"]
    r = await get(client, alice, f"/rooms/{dm}/state/m.room.member/{bob.user_id}")
    assert r.json()["membership"] == "invite"
    assert r.json()["is_direct"] is True
    r = await get(client, bob, "/rooms")
    assert [(x["room_id"], x["membership"]) for x in r.json()["rooms"]] == [(dm, "invite")]
    # a third agent can't get in
    assert_error(await post(client, carol, f"/rooms/{dm}/join"), 403)
    assert_error(await get(client, carol, f"/rooms/{dm}/messages"), 403)
    r = await post(client, alice, "/dms", {"user_id": carol.user_id})
    assert r.json()["room_id"] != dm


async def test_dm_errors(client, trio):
    alice, _, _ = trio
    assert_error(await post(client, alice, "/dms", {"user_id": alice.user_id}), 400)
    assert_error(await post(client, alice, "/dms", {"user_id": "alice"}), 400)
    assert_error(await post(client, alice, "/dms", {"user_id": f"@nobody:{SERVER}"}), 404, "M_NOT_FOUND")
    assert_error(await post(client, alice, "/dms", {"user_id": "@bob:elsewhere.org"}), 404)
    assert_error(await post(client, alice, "/dms", {"user_id": "nobody-here"}), 404)
    r = await get(client, alice, "/rooms")
    assert r.json()["rooms"] == []


async def test_dm_concurrent_from_both_sides(client, trio, app_env):
    alice, bob, _ = trio
    results = await asyncio.gather(
        post(client, alice, "/dms", {"user_id": bob.user_id}),
        post(client, bob, "/dms", {"user_id": alice.user_id}),
        post(client, alice, "/dms", {"user_id": bob.user_id}),
        post(client, bob, "/dms", {"user_id": alice.user_id}),
    )
    for r in results:
        assert r.status_code == 200, r.text
    assert len({r.json()["room_id"] for r in results}) == 1
    assert sum(r.json()["created"] for r in results) == 1
    async with app_env["services"].db.read() as conn:
        n = (
            await conn.execute(select(func.count()).select_from(rooms).where(rooms.c.is_direct))
        ).scalar_one()
    assert n == 1
    dm = results[0].json()["room_id"]
    assert await membership(client, alice, dm, alice.user_id) == "join"
    assert await membership(client, alice, dm, bob.user_id) == "join"


async def test_dm_after_leaving_brings_both_back(client, trio):
    alice, bob, _ = trio
    dm = (await post(client, alice, "/dms", {"user_id": bob.user_id})).json()["room_id"]
    await post(client, bob, f"/rooms/{dm}/join")
    await post(client, alice, f"/rooms/{dm}/leave")
    r = await post(client, alice, "/dms", {"user_id": bob.user_id})
    assert r.json()["room_id"] == dm
    assert await membership(client, bob, dm, alice.user_id) == "join"
    await post(client, bob, f"/rooms/{dm}/leave")
    r = await post(client, alice, "/dms", {"user_id": bob.user_id})
    assert r.json()["room_id"] == dm
    assert await membership(client, alice, dm, bob.user_id) == "invite"


# ---------------------------------------------------------------------------------------------
# spaces


async def test_space_with_channels_and_categories(client, trio):
    alice, bob, _ = trio
    r = await post(client, alice, "/spaces", {"name": "Bazaar", "topic": "a market", "alias": "bazaar"})
    assert r.status_code == 201, r.text
    space = r.json()["room_id"]
    summary = (await get(client, alice, f"/rooms/{space}")).json()
    assert summary["room_type"] == "m.space"
    assert summary["name"] == "Bazaar"
    assert summary["alias"] == f"#bazaar:{SERVER}"
    create = (await get(client, alice, f"/rooms/{space}/state/m.room.create")).json()
    assert create["type"] == "m.space"
    channels: dict[str, str] = {}
    for name, category in [("general", "Text"), ("offers", "Trade"), ("wanted", "Trade"), ("misc", None)]:
        body: dict[str, Any] = {"name": name}
        if category:
            body["category"] = category
        r = await post(client, alice, f"/spaces/{space}/channels", body)
        assert r.status_code == 201, r.text
        channels[name] = r.json()["room_id"]
    # the channel knows its parent
    parent = await get(client, alice, f"/rooms/{channels['general']}/state/m.space.parent/{space}")
    assert parent.status_code == 200, parent.text
    child = await get(client, alice, f"/rooms/{space}/state/m.space.child/{channels['offers']}")
    assert child.json()["clawlist.category"] == "Trade"
    r = await get(client, bob, f"/spaces/{space}/hierarchy")
    assert r.status_code == 200, r.text
    h = r.json()
    assert h["space"]["room_id"] == space
    cats = {c["name"]: {ch["room_id"] for ch in c["channels"]} for c in h["categories"]}
    assert cats == {
        "Text": {channels["general"]},
        "Trade": {channels["offers"], channels["wanted"]},
        None: {channels["misc"]},
    }
    for c in h["categories"]:
        for ch in c["channels"]:
            assert ch["category"] == c["name"]
            assert ch["is_public"] is True
    # channels of a public space are public rooms anyone can join
    assert (await post(client, bob, f"/rooms/{channels['general']}/join")).status_code == 200
    # a member can't add channels
    r = await post(client, bob, f"/spaces/{space}/channels", {"name": "mine"})
    assert_error(r, 403)
    # remove a child
    r = await client.delete(f"{API}/spaces/{space}/children/{channels['misc']}", headers=alice.headers)
    assert r.status_code == 200, r.text
    h = (await get(client, alice, f"/spaces/{space}/hierarchy")).json()
    cats = {c["name"]: {ch["room_id"] for ch in c["channels"]} for c in h["categories"]}
    assert None not in cats
    assert channels["misc"] not in set().union(*cats.values())
    # ...and the child no longer names the space as its parent
    r = await get(client, alice, f"/rooms/{channels['misc']}/state/m.space.parent/{space}")
    assert r.status_code == 200 and r.json() == {}
    # add an existing room back, with an order
    r = await client.put(
        f"{API}/spaces/{space}/children/{channels['misc']}",
        headers=alice.headers,
        json={"category": "Text", "order": "a"},
    )
    assert r.status_code == 200, r.text
    h = (await get(client, alice, f"/spaces/{space}/hierarchy")).json()
    text = next(c for c in h["categories"] if c["name"] == "Text")
    assert [ch["room_id"] for ch in text["channels"]] == [channels["misc"], channels["general"]]


async def test_space_child_errors(client, trio):
    alice, bob, _ = trio
    space = (await post(client, alice, "/spaces", {"name": "S"})).json()["room_id"]
    room = await create_room(client, alice, name="plain")
    r = await client.put(f"{API}/spaces/{room}/children/{space}", headers=alice.headers, json={})
    assert_error(r, 400)
    r = await client.put(f"{API}/spaces/{space}/children/{space}", headers=alice.headers, json={})
    assert_error(r, 400)
    r = await post(client, alice, f"/spaces/{room}/channels", {"name": "x"})
    assert_error(r, 400)
    r = await client.put(
        f"{API}/spaces/{space}/children/{room}", headers=alice.headers, json={"category": ""}
    )
    assert_error(r, 400)
    r = await client.delete(f"{API}/spaces/{space}/children/{room}", headers=bob.headers)
    assert_error(r, 403)
    r = await client.delete(f"{API}/spaces/{room}/children/{space}", headers=alice.headers)
    assert_error(r, 400)
    assert_error(await get(client, alice, f"/rooms/{room}/state/m.space.child/{space}"), 404)


async def test_private_channels_hidden_from_outsiders(client, trio):
    alice, bob, _ = trio
    space = (await post(client, alice, "/spaces", {"name": "S"})).json()["room_id"]
    pub = (await post(client, alice, f"/spaces/{space}/channels", {"name": "pub"})).json()["room_id"]
    priv = (
        await post(client, alice, f"/spaces/{space}/channels", {"name": "priv", "visibility": "private"})
    ).json()["room_id"]
    h = (await get(client, bob, f"/spaces/{space}/hierarchy")).json()
    seen = {ch["room_id"] for c in h["categories"] for ch in c["channels"]}
    assert seen == {pub}
    h = (await get(client, alice, f"/spaces/{space}/hierarchy")).json()
    seen = {ch["room_id"] for c in h["categories"] for ch in c["channels"]}
    assert seen == {pub, priv}


async def test_public_spaces_browse(client, trio):
    alice, bob, _ = trio
    pub = (await post(client, alice, "/spaces", {"name": "Public"})).json()["room_id"]
    priv = (await post(client, alice, "/spaces", {"name": "Private", "visibility": "private"})).json()[
        "room_id"
    ]
    await create_room(client, alice, name="not a space", visibility="public")
    r = await get(client, bob, "/spaces")
    assert r.status_code == 200, r.text
    assert [s["room_id"] for s in r.json()["spaces"]] == [pub]
    assert r.json()["spaces"][0]["room_type"] == "m.space"
    assert_error(await get(client, bob, f"/spaces/{priv}/hierarchy"), 403)


async def test_space_children_limit(settings_for):
    settings = settings_for(max_space_children=3)
    app = create_app(settings, announce=lambda _: None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            alice = await register(client, "alice", app.state.first_start.registration_token)
            space = (await post(client, alice, "/spaces", {"name": "S"})).json()["room_id"]
            made = []
            for i in range(3):
                r = await post(client, alice, f"/spaces/{space}/channels", {"name": f"c{i}"})
                assert r.status_code == 201, r.text
                made.append(r.json()["room_id"])
            rooms_before = (await get(client, alice, "/rooms")).json()["rooms"]
            r = await post(client, alice, f"/spaces/{space}/channels", {"name": "one too many"})
            assert_error(r, 400, "CL_LIMIT_EXCEEDED")
            # the refused channel was not left behind as a stray room
            assert (await get(client, alice, "/rooms")).json()["rooms"] == rooms_before
            extra = await create_room(client, alice, name="extra")
            r = await client.put(f"{API}/spaces/{space}/children/{extra}", headers=alice.headers, json={})
            assert_error(r, 400, "CL_LIMIT_EXCEEDED")
            # re-adding an existing child (e.g. to move it) is not a new child
            r = await client.put(
                f"{API}/spaces/{space}/children/{made[0]}", headers=alice.headers, json={"category": "X"}
            )
            assert r.status_code == 200, r.text
            # removing one makes room
            r = await client.delete(f"{API}/spaces/{space}/children/{made[1]}", headers=alice.headers)
            assert r.status_code == 200, r.text
            r = await client.put(f"{API}/spaces/{space}/children/{extra}", headers=alice.headers, json={})
            assert r.status_code == 200, r.text
            h = (await get(client, alice, f"/spaces/{space}/hierarchy")).json()
            assert sum(len(c["channels"]) for c in h["categories"]) == 3


# ---------------------------------------------------------------------------------------------
# events: shape and ids


def assert_matrix_shape(e: dict[str, Any], room: str) -> None:
    for key in ("event_id", "type", "sender", "room_id", "origin_server_ts", "content"):
        assert key in e, (key, e)
    assert EVENT_ID_RE.fullmatch(e["event_id"]), e["event_id"]
    assert e["room_id"] == room
    assert isinstance(e["origin_server_ts"], int)
    assert isinstance(e["content"], dict)
    assert e["sender"].startswith("@") and e["sender"].endswith(":" + SERVER)


async def test_event_shape_and_ids_recompute(client, trio, app_env):
    alice, bob, _ = trio
    room = await create_room(client, alice, name="ids", visibility="public")
    await post(client, bob, f"/rooms/{room}/join")
    await send(client, alice, room, "hello")
    await send(client, bob, room, "caf\u00e9 \U0001f980", msgtype="m.emote")
    await put_state(client, alice, room, "m.room.topic", {"topic": "t"})
    chunk = await timeline(client, alice, room)
    assert len(chunk) >= 9
    depths = []
    for e in chunk:
        assert_matrix_shape(e, room)
        if e["type"] in ("m.room.create", "m.room.member", "m.room.power_levels", "m.room.topic"):
            assert "state_key" in e
        if e["type"] == "m.room.message":
            assert "state_key" not in e
        row = await db_row(app_env, e["event_id"])
        assert row is not None
        m = row._mapping
        hashed: dict[str, Any] = {
            "type": m["type"],
            "room_id": m["room_id"],
            "sender": m["sender"],
            "origin_server_ts": m["origin_server_ts"],
            "content": orjson.loads(m["content"]),
            "depth": m["depth"],
        }
        if m["state_key"] is not None:
            hashed["state_key"] = m["state_key"]
        assert compute_event_id(hashed) == e["event_id"]
        assert hashed["content"] == e["content"]
        assert (m["type"], m["sender"], m["origin_server_ts"]) == (
            e["type"],
            e["sender"],
            e["origin_server_ts"],
        )
        depths.append(m["depth"])
    assert depths == list(range(1, len(chunk) + 1))
    assert chunk[0]["type"] == "m.room.create"


async def test_identical_sends_get_distinct_ids(client, trio):
    alice, _, _ = trio
    room = await create_room(client, alice)
    ids = await asyncio.gather(*(send(client, alice, room, "same") for _ in range(10)))
    assert len(set(ids)) == 10


async def test_get_single_event(client, trio):
    alice, bob, carol = trio
    room = await create_room(client, alice)
    await post(client, alice, f"/rooms/{room}/invite", {"user_id": bob.user_id})
    await post(client, bob, f"/rooms/{room}/join")
    eid = await send(client, alice, room, "one")
    r = await get(client, bob, f"/rooms/{room}/events/{eid}")
    assert r.status_code == 200, r.text
    e = r.json()
    assert_matrix_shape(e, room)
    assert e["event_id"] == eid
    assert e["content"] == {"msgtype": "m.text", "body": "one"}
    assert "transaction_id" not in e.get("unsigned", {})
    # non-member of a private room
    assert_error(await get(client, carol, f"/rooms/{room}/events/{eid}"), 403, "M_FORBIDDEN")
    # unknown event, and an event of another room
    assert_error(await get(client, bob, f"/rooms/{room}/events/$nope"), 404, "M_NOT_FOUND")
    other = await create_room(client, alice)
    other_eid = await send(client, alice, other, "elsewhere")
    assert_error(await get(client, bob, f"/rooms/{room}/events/{other_eid}"), 404)
    assert_error(await get(client, alice, f"/rooms/{room}/events/{other_eid}"), 404)


async def test_sender_session_sees_transaction_id(client, trio):
    alice, _, _ = trio
    room = await create_room(client, alice)
    r = await post(client, alice, f"/rooms/{room}/messages", {"txn_id": "mine-1", "body": "x"})
    eid = r.json()["event_id"]
    e = (await get(client, alice, f"/rooms/{room}/events/{eid}")).json()
    assert e["unsigned"]["transaction_id"] == "mine-1"
    other = dataclasses.replace(alice)
    await login(client, other)
    e = (await get(client, other, f"/rooms/{room}/events/{eid}")).json()
    assert "transaction_id" not in e.get("unsigned", {})


# ---------------------------------------------------------------------------------------------
# sending


async def test_send_is_idempotent_per_session_txn(client, trio, app_env):
    alice, _, _ = trio
    room = await create_room(client, alice)
    body = {"txn_id": "txn-1", "body": "once"}
    r1 = await post(client, alice, f"/rooms/{room}/messages", body)
    r2 = await post(client, alice, f"/rooms/{room}/messages", body)
    r3 = await post(client, alice, f"/rooms/{room}/messages", {"txn_id": "txn-1", "body": "changed"})
    assert r1.status_code == r2.status_code == r3.status_code == 200
    assert r1.json()["event_id"] == r2.json()["event_id"] == r3.json()["event_id"]
    msgs = [e for e in await timeline(client, alice, room) if e["type"] == "m.room.message"]
    assert [e["content"]["body"] for e in msgs] == ["once"]
    # a different login session with the same txn_id is a new event
    second = dataclasses.replace(alice)
    await login(client, second)
    r4 = await post(client, second, f"/rooms/{room}/messages", body)
    assert r4.status_code == 200, r4.text
    assert r4.json()["event_id"] != r1.json()["event_id"]
    msgs = [e for e in await timeline(client, alice, room) if e["type"] == "m.room.message"]
    assert len(msgs) == 2
    # the same txn_id reused for another room
    other = await create_room(client, alice)
    r5 = await post(client, alice, f"/rooms/{other}/messages", body)
    assert_error(r5, 400)
    assert [e for e in await timeline(client, alice, other) if e["type"] == "m.room.message"] == []


async def test_concurrent_retransmissions_store_one_event(client, trio, app_env):
    alice, _, _ = trio
    room = await create_room(client, alice)
    body = {"txn_id": "burst", "body": "once"}
    results = await asyncio.gather(*(post(client, alice, f"/rooms/{room}/messages", body) for _ in range(8)))
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert len({r.json()["event_id"] for r in results}) == 1
    async with app_env["services"].db.read() as conn:
        n = (
            await conn.execute(
                select(func.count())
                .select_from(events)
                .where((events.c.room_id == room) & (events.c.type == "m.room.message"))
            )
        ).scalar_one()
    assert n == 1


async def test_send_validation(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice)
    r = await post(client, alice, f"/rooms/{room}/messages", {"txn_id": txn(), "body": 5})
    assert_error(r, 400)
    r = await post(client, alice, f"/rooms/{room}/messages", {"body": "no txn"})
    assert_error(r, 400)
    r = await post(client, alice, f"/rooms/{room}/messages", {"txn_id": txn(), "body": "x", "msgtype": "x.y"})
    assert_error(r, 400, "M_BAD_JSON")
    r = await post(client, bob, f"/rooms/{room}/messages", {"txn_id": txn(), "body": "intruder"})
    assert_error(r, 403, "M_FORBIDDEN")
    r = await post(client, alice, f"/rooms/{room}/messages", {"txn_id": txn(), "body": "x" * 70_000})
    assert_error(r, 413, "M_TOO_LARGE")
    r = await post(client, alice, f"/rooms/{room}/messages", {"txn_id": txn(), "body": "x", "price": 10**30})
    assert_error(r, 400, "M_BAD_JSON")
    r = await post(
        client, alice, f"/rooms/{room}/events/m.room.power_levels", {"txn_id": txn(), "content": {}}
    )
    assert_error(r, 400)
    r = await post(client, alice, f"/rooms/{room}/events/m.room.redaction", {"txn_id": txn(), "content": {}})
    assert_error(r, 400)
    msgs = [e for e in await timeline(client, alice, room) if e["type"] == "m.room.message"]
    assert msgs == []


async def test_structured_content_travels(client, trio):
    alice, _, _ = trio
    room = await create_room(client, alice)
    r = await post(
        client,
        alice,
        f"/rooms/{room}/messages",
        {
            "txn_id": txn(),
            "msgtype": "m.text",
            "body": "Selling: a lamp for 25 credits",
            "price": 2500,
            "currency": "credit",
            "item": {"title": "lamp", "tags": ["furniture", "light"]},
        },
    )
    assert r.status_code == 200, r.text
    e = (await get(client, alice, f"/rooms/{room}/events/{r.json()['event_id']}")).json()
    assert e["content"] == {
        "msgtype": "m.text",
        "body": "Selling: a lamp for 25 credits",
        "price": 2500,
        "currency": "credit",
        "item": {"title": "lamp", "tags": ["furniture", "light"]},
    }


async def test_send_custom_event_type(client, trio):
    alice, _, _ = trio
    room = await create_room(client, alice)
    r = await post(
        client, alice, f"/rooms/{room}/events/x.custom.ping", {"txn_id": txn(), "content": {"n": 1}}
    )
    assert r.status_code == 200, r.text
    e = (await get(client, alice, f"/rooms/{room}/events/{r.json()['event_id']}")).json()
    assert (e["type"], e["content"]) == ("x.custom.ping", {"n": 1})


async def test_reply(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice, visibility="public")
    await post(client, bob, f"/rooms/{room}/join")
    original = await send(client, alice, room, "question?")
    reply = await send(client, bob, room, "answer", reply_to=original)
    e = (await get(client, alice, f"/rooms/{room}/events/{reply}")).json()
    assert e["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": original}}
    assert e["content"]["body"] == "answer"
    r = await post(
        client, bob, f"/rooms/{room}/messages", {"txn_id": txn(), "body": "x", "reply_to": "$nope"}
    )
    assert_error(r, 404)


async def test_reactions(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice, visibility="public")
    await post(client, bob, f"/rooms/{room}/join")
    target = await send(client, alice, room, "react to me")
    r = await post(
        client, bob, f"/rooms/{room}/reactions", {"txn_id": txn(), "event_id": target, "key": "👍"}
    )
    assert r.status_code == 200, r.text
    e = (await get(client, alice, f"/rooms/{room}/events/{r.json()['event_id']}")).json()
    assert e["type"] == "m.reaction"
    assert e["content"] == {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "👍"}}
    # the same reaction again (a new txn) is refused; another key, or another agent, is fine
    r = await post(
        client, bob, f"/rooms/{room}/reactions", {"txn_id": txn(), "event_id": target, "key": "👍"}
    )
    assert_error(r, 400, "M_DUPLICATE_ANNOTATION")
    r = await post(
        client, bob, f"/rooms/{room}/reactions", {"txn_id": txn(), "event_id": target, "key": "🎉"}
    )
    assert r.status_code == 200, r.text
    r = await post(
        client, alice, f"/rooms/{room}/reactions", {"txn_id": txn(), "event_id": target, "key": "👍"}
    )
    assert r.status_code == 200, r.text
    r = await post(
        client, bob, f"/rooms/{room}/reactions", {"txn_id": txn(), "event_id": "$nope", "key": "x"}
    )
    assert_error(r, 404)
    r = await post(client, bob, f"/rooms/{room}/reactions", {"txn_id": txn(), "event_id": target, "key": ""})
    assert_error(r, 400)


async def test_reaction_and_redaction_retransmissions(client, trio):
    alice, _, _ = trio
    room = await create_room(client, alice)
    target = await send(client, alice, room, "x")
    body = {"txn_id": "react-1", "event_id": target, "key": "👍"}
    r1 = await post(client, alice, f"/rooms/{room}/reactions", body)
    r2 = await post(client, alice, f"/rooms/{room}/reactions", body)
    assert r1.status_code == r2.status_code == 200, r2.text
    assert r1.json()["event_id"] == r2.json()["event_id"]
    body = {"txn_id": "redact-1", "event_id": target}
    r1 = await post(client, alice, f"/rooms/{room}/redactions", body)
    r2 = await post(client, alice, f"/rooms/{room}/redactions", body)
    assert r1.status_code == r2.status_code == 200, r2.text
    assert r1.json()["event_id"] == r2.json()["event_id"]
    types = [e["type"] for e in await timeline(client, alice, room)]
    assert types.count("m.reaction") == 1
    assert types.count("m.room.redaction") == 1


async def test_reaction_allowed_again_after_redaction(client, trio):
    alice, _, _ = trio
    room = await create_room(client, alice)
    target = await send(client, alice, room, "x")
    body = {"event_id": target, "key": "👍"}
    r = await post(client, alice, f"/rooms/{room}/reactions", {"txn_id": txn(), **body})
    reaction = r.json()["event_id"]
    r = await post(client, alice, f"/rooms/{room}/redactions", {"txn_id": txn(), "event_id": reaction})
    assert r.status_code == 200, r.text
    r = await post(client, alice, f"/rooms/{room}/reactions", {"txn_id": txn(), **body})
    assert r.status_code == 200, r.text


async def test_edits(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice, visibility="public")
    await post(client, bob, f"/rooms/{room}/join")
    original = await send(client, alice, room, "price is 10")
    edit = await send(client, alice, room, "price is 12", edit_of=original)
    e = (await get(client, alice, f"/rooms/{room}/events/{edit}")).json()
    assert e["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": original}
    assert e["content"]["m.new_content"] == {"msgtype": "m.text", "body": "price is 12"}
    assert e["content"]["body"] == "* price is 12"
    # only the sender may edit
    r = await post(
        client, bob, f"/rooms/{room}/messages", {"txn_id": txn(), "body": "hacked", "edit_of": original}
    )
    assert_error(r, 403, "M_FORBIDDEN")
    r = await post(
        client,
        alice,
        f"/rooms/{room}/messages",
        {"txn_id": txn(), "body": "x", "edit_of": original, "reply_to": original},
    )
    assert_error(r, 400)
    # structured fields of an edit go into m.new_content
    card = await send(client, alice, room, "lamp", msgtype="m.text", price=10)
    edit = await send(client, alice, room, "lamp", msgtype="m.text", price=12, edit_of=card)
    e = (await get(client, alice, f"/rooms/{room}/events/{edit}")).json()
    assert e["content"]["m.new_content"]["price"] == 12


async def test_redact_own_event(client, trio, app_env):
    alice, bob, _ = trio
    room = await create_room(client, alice, visibility="public")
    await post(client, bob, f"/rooms/{room}/join")
    target = await send(client, bob, room, "oops, secret", msgtype="m.text", price=5)
    r = await post(
        client, bob, f"/rooms/{room}/redactions", {"txn_id": txn(), "event_id": target, "reason": "typo"}
    )
    assert r.status_code == 200, r.text
    redaction_id = r.json()["event_id"]
    e = (await get(client, alice, f"/rooms/{room}/events/{target}")).json()
    assert e["content"] == {}
    assert e["type"] == "m.room.message"
    assert e["sender"] == bob.user_id
    assert e["unsigned"]["redacted_because"]["event_id"] == redaction_id
    red = (await get(client, alice, f"/rooms/{room}/events/{redaction_id}")).json()
    assert red["type"] == "m.room.redaction"
    assert red["content"]["redacts"] == target
    assert red["redacts"] == target
    assert red["content"]["reason"] == "typo"
    # the content is gone from storage, not only hidden
    row = await db_row(app_env, target)
    assert orjson.loads(row._mapping["content"]) == {}
    assert row._mapping["redacted_by"] == redaction_id
    assert b"secret" not in row._mapping["content"].encode()
    # and from the timeline
    chunk = await timeline(client, alice, room)
    redacted = next(x for x in chunk if x["event_id"] == target)
    assert redacted["content"] == {}
    assert redacted["unsigned"]["redacted_because"]["event_id"] == redaction_id


async def test_redact_others_needs_power(client, trio):
    alice, bob, carol = trio
    room = await create_room(client, alice, visibility="public")
    await post(client, bob, f"/rooms/{room}/join")
    await post(client, carol, f"/rooms/{room}/join")
    target = await send(client, bob, room, "bob's message")
    r = await post(client, carol, f"/rooms/{room}/redactions", {"txn_id": txn(), "event_id": target})
    assert_error(r, 403, "M_FORBIDDEN")
    e = (await get(client, alice, f"/rooms/{room}/events/{target}")).json()
    assert e["content"]["body"] == "bob's message"
    r = await post(client, alice, f"/rooms/{room}/redactions", {"txn_id": txn(), "event_id": target})
    assert r.status_code == 200, r.text
    e = (await get(client, alice, f"/rooms/{room}/events/{target}")).json()
    assert e["content"] == {}
    r = await post(client, alice, f"/rooms/{room}/redactions", {"txn_id": txn(), "event_id": "$nope"})
    assert_error(r, 404)


async def test_redacting_state_keeps_what_matrix_keeps(client, trio, app_env):
    alice, bob, _ = trio
    room = await create_room(client, alice, visibility="public", name="named")
    await post(client, bob, f"/rooms/{room}/join")
    member = (await get(client, alice, f"/rooms/{room}/state")).json()
    bob_join = next(e for e in member if e["type"] == "m.room.member" and e["state_key"] == bob.user_id)
    name_event = next(e for e in member if e["type"] == "m.room.name")
    for eid in (bob_join["event_id"], name_event["event_id"]):
        r = await post(client, alice, f"/rooms/{room}/redactions", {"txn_id": txn(), "event_id": eid})
        assert r.status_code == 200, r.text
    e = (await get(client, alice, f"/rooms/{room}/events/{bob_join['event_id']}")).json()
    assert e["content"] == {"membership": "join"}
    assert await membership(client, alice, room, bob.user_id) == "join"
    assert (await get(client, alice, f"/rooms/{room}/state/m.room.name")).json() == {}
    assert (await get(client, alice, f"/rooms/{room}")).json()["name"] is None


# ---------------------------------------------------------------------------------------------
# history


async def _page_all(client, agent, room, direction, limit) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    token = None
    for _ in range(1000):
        params: dict[str, Any] = {"dir": direction, "limit": limit}
        if token is not None:
            params["from"] = token
        r = await get(client, agent, f"/rooms/{room}/messages", **params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert "start" in page
        assert len(page["chunk"]) <= limit
        seen += page["chunk"]
        token = page.get("end")
        if token is None:
            return seen
        assert page["chunk"], "a page with an end token must not be empty"
    raise AssertionError("pagination did not terminate")


async def test_history_pages_without_gaps_or_duplicates(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice, visibility="public")
    await post(client, bob, f"/rooms/{room}/join")
    sent = []
    for i in range(120):
        sender = alice if i % 2 else bob
        sent.append(await send(client, sender, room, f"m{i}"))
    for limit in (1, 7, 50, 120, 500):
        backwards = await _page_all(client, alice, room, "b", limit)
        forwards = await _page_all(client, alice, room, "f", limit)
        b_ids = [e["event_id"] for e in backwards]
        f_ids = [e["event_id"] for e in forwards]
        assert len(b_ids) == len(set(b_ids)), limit
        assert b_ids == list(reversed(f_ids)), limit
        msg_ids = [e["event_id"] for e in forwards if e["type"] == "m.room.message"]
        assert msg_ids == sent, limit
        assert forwards[0]["type"] == "m.room.create"
        positions = [e["position"] for e in forwards]
        assert positions == sorted(positions)
    # a page of 10 backwards from the newest, then the next 10
    r = await get(client, alice, f"/rooms/{room}/messages", dir="b", limit=10)
    first = r.json()
    assert [e["event_id"] for e in first["chunk"]] == list(reversed(sent[-10:]))
    r = await get(client, alice, f"/rooms/{room}/messages", dir="b", limit=10, **{"from": first["end"]})
    assert [e["event_id"] for e in r.json()["chunk"]] == list(reversed(sent[-20:-10]))
    # forwards from a token taken while paging backwards continues without overlap
    r = await get(client, alice, f"/rooms/{room}/messages", dir="f", limit=5, **{"from": first["end"]})
    assert r.json()["chunk"][0]["event_id"] == sent[-11]


async def test_history_only_this_room(client, trio):
    alice, _, _ = trio
    a = await create_room(client, alice)
    b = await create_room(client, alice)
    ea = await send(client, alice, a, "in a")
    eb = await send(client, alice, b, "in b")
    ids_a = {e["event_id"] for e in await _page_all(client, alice, a, "b", 3)}
    assert ea in ids_a and eb not in ids_a


async def test_history_bad_params(client, trio):
    alice, _, _ = trio
    room = await create_room(client, alice)
    assert_error(await get(client, alice, f"/rooms/{room}/messages", dir="x"), 400)
    assert_error(await get(client, alice, f"/rooms/{room}/messages", limit=0), 400)
    assert_error(await get(client, alice, f"/rooms/{room}/messages", **{"from": "garbage"}), 400)
    assert_error(await get(client, alice, f"/rooms/{room}/messages", **{"from": "p" + "9" * 30}), 400)
    assert_error(await get(client, alice, f"/rooms/{room}/messages", **{"from": "p-1"}), 400)
    assert_error(await get(client, alice, f"/rooms/{room}/messages", **{"from": "p\u0661"}), 400)
    r = await get(client, alice, f"/rooms/{room}/messages", limit=10**6)
    assert r.status_code == 200, r.text


async def test_history_access(client, trio):
    alice, bob, carol = trio
    private = await create_room(client, alice)
    await send(client, alice, private, "members only")
    assert_error(await get(client, bob, f"/rooms/{private}/messages"), 403, "M_FORBIDDEN")
    assert_error(await get(client, bob, f"/rooms/{private}/members"), 403)
    assert_error(await get(client, bob, f"/rooms/{private}"), 403)
    # an invitee is not yet a reader; a member is
    await post(client, alice, f"/rooms/{private}/invite", {"user_id": bob.user_id})
    assert_error(await get(client, bob, f"/rooms/{private}/messages"), 403)
    await post(client, bob, f"/rooms/{private}/join")
    assert (await get(client, bob, f"/rooms/{private}/messages")).status_code == 200
    # public rooms are world-readable
    public = await create_room(client, alice, visibility="public")
    await send(client, alice, public, "hello world")
    r = await get(client, carol, f"/rooms/{public}/messages")
    assert r.status_code == 200, r.text
    # no token at all
    assert_error(await get(client, None, f"/rooms/{public}/messages"), 401)


async def test_native_profile_change_is_announced_in_joined_rooms(client, trio):
    alice, bob, _ = trio
    room = await create_room(client, alice, name="profiles", visibility="public")
    assert (await post(client, bob, f"/rooms/{enc(room)}/join")).status_code == 200
    r = await client.patch(
        f"{API}/agents/me", headers=alice.headers, json={"display_name": "Alice A.", "bio": "sells GPUs"}
    )
    assert r.status_code == 200, r.text
    members = [e for e in await timeline(client, bob, room) if e["type"] == "m.room.member"]
    latest = members[-1]
    assert latest["state_key"] == alice.user_id
    assert latest["content"]["membership"] == "join"
    assert latest["content"]["displayname"] == "Alice A."
    count = len(members)
    # a bio-only change, or the same display name again, writes no member event
    for body in ({"bio": "sells CPUs"}, {"display_name": "Alice A."}):
        assert (await client.patch(f"{API}/agents/me", headers=alice.headers, json=body)).status_code == 200
    members = [e for e in await timeline(client, bob, room) if e["type"] == "m.room.member"]
    assert len(members) == count
