"""The Matrix façade's rooms: createRoom (presets, order, is_direct, overrides), membership, state,
members, the room directory and aliases. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.helpers import Agent, register, send

M = "/_matrix/client/v3"
SERVER = "test.local"


def enc(ref: str) -> str:
    """Percent-encode everything in a path segment ('!', '#', '$', '@', ':')."""
    return quote(ref, safe="")


async def mx(
    client: httpx.AsyncClient,
    agent: Agent | None,
    method: str,
    path: str,
    body: Any = None,
    **params: Any,
) -> httpx.Response:
    headers = agent.headers if agent else {}
    content = None
    if isinstance(body, (bytes, str)):
        content, body = body, None
    return await client.request(
        method, f"{M}{path}", headers=headers, json=body, content=content, params=params or None
    )


def ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


def err(r: httpx.Response, status: int, errcode: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert "errcode" in body and "error" in body, body
    if errcode is not None:
        assert body["errcode"] == errcode, body


@pytest.fixture
async def trio(client: httpx.AsyncClient, reg_token: str) -> tuple[Agent, Agent, Agent]:
    return (
        await register(client, "alice", reg_token),
        await register(client, "bob", reg_token),
        await register(client, "carol", reg_token),
    )


async def create(client: httpx.AsyncClient, agent: Agent, **body: Any) -> str:
    return str(ok(await mx(client, agent, "POST", "/createRoom", body))["room_id"])


async def timeline_f(client: httpx.AsyncClient, agent: Agent, room: str) -> list[dict[str, Any]]:
    return list(
        ok(await mx(client, agent, "GET", f"/rooms/{enc(room)}/messages", dir="f", limit=1000))["chunk"]
    )


async def state_of(client: httpx.AsyncClient, agent: Agent, room: str) -> dict[tuple[str, str], Any]:
    events = ok(await mx(client, agent, "GET", f"/rooms/{enc(room)}/state"))
    return {(e["type"], e["state_key"]): e["content"] for e in events}


# ---------------------------------------------------------------------------------------------
# createRoom


async def test_create_room_spec_order_and_presets(client, trio):
    alice, bob, carol = trio
    room = await create(
        client,
        alice,
        name="Deals",
        topic="where agents trade",
        room_alias_name="deals",
        preset="private_chat",
        invite=[bob.user_id, carol.user_id],
        initial_state=[{"type": "x.custom", "state_key": "k", "content": {"v": 1}}],
    )
    assert room.startswith("!") and room.endswith(":" + SERVER)
    events = await timeline_f(client, alice, room)
    kinds = [(e["type"], e.get("state_key")) for e in events]
    assert kinds == [
        ("m.room.create", ""),
        ("m.room.member", alice.user_id),
        ("m.room.power_levels", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("x.custom", "k"),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", bob.user_id),
        ("m.room.member", carol.user_id),
    ]
    for e in events:
        assert "position" not in e
        assert e["event_id"].startswith("$") and e["room_id"] == room
        assert isinstance(e["origin_server_ts"], int)
    state = await state_of(client, alice, room)
    assert state[("m.room.create", "")]["room_version"] == "10"
    assert state[("m.room.create", "")]["creator"] == alice.user_id
    assert state[("m.room.join_rules", "")] == {"join_rule": "invite"}
    assert state[("m.room.history_visibility", "")] == {"history_visibility": "shared"}
    assert state[("m.room.guest_access", "")] == {"guest_access": "can_join"}
    assert state[("m.room.canonical_alias", "")] == {"alias": f"#deals:{SERVER}"}
    assert state[("m.room.member", bob.user_id)]["membership"] == "invite"
    assert "is_direct" not in state[("m.room.member", bob.user_id)]
    # private: not listed in the directory
    assert ok(await mx(client, None, "GET", f"/directory/list/room/{enc(room)}")) == {"visibility": "private"}


async def test_create_room_public_chat_and_trusted_private(client, trio):
    alice, bob, _ = trio
    public = await create(client, alice, visibility="public", name="open")
    state = await state_of(client, alice, public)
    assert state[("m.room.join_rules", "")] == {"join_rule": "public"}
    assert state[("m.room.guest_access", "")] == {"guest_access": "forbidden"}
    assert ok(await mx(client, None, "GET", f"/directory/list/room/{enc(public)}")) == {
        "visibility": "public"
    }
    # a public room that is not listed: preset public_chat, visibility private
    unlisted = await create(client, alice, preset="public_chat")
    assert (await state_of(client, alice, unlisted))[("m.room.join_rules", "")] == {"join_rule": "public"}
    assert (
        ok(await mx(client, None, "GET", f"/directory/list/room/{enc(unlisted)}"))["visibility"] == "private"
    )
    trusted = await create(client, alice, preset="trusted_private_chat", invite=[bob.user_id])
    levels = (await state_of(client, alice, trusted))[("m.room.power_levels", "")]
    assert levels["users"] == {alice.user_id: 100, bob.user_id: 100}


async def test_create_room_overrides_and_versions(client, trio):
    alice, bob, _ = trio
    room = await create(
        client,
        alice,
        room_version="11",
        creation_content={"m.federate": False, "creator": "@forged:x", "room_version": "1"},
        power_level_content_override={"users": {bob.user_id: 50}, "events_default": 10},
        initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "public"}}],
    )
    state = await state_of(client, alice, room)
    create_content = state[("m.room.create", "")]
    assert create_content["room_version"] == "11"
    assert create_content["m.federate"] is False
    assert "creator" not in create_content  # room version 11 has none, and a forged one is dropped
    levels = state[("m.room.power_levels", "")]
    assert levels["users"] == {alice.user_id: 100, bob.user_id: 50}
    assert levels["events_default"] == 10
    # initial_state took precedence over the preset: one join_rules event, the given one
    events = await timeline_f(client, alice, room)
    assert [e["content"] for e in events if e["type"] == "m.room.join_rules"] == [{"join_rule": "public"}]
    # a space through creation_content.type
    space = await create(client, alice, creation_content={"type": "m.space"}, name="s")
    assert (await state_of(client, alice, space))[("m.room.create", "")]["type"] == "m.space"


async def test_create_room_bad_input(client, trio):
    alice, _, _ = trio
    bad: list[tuple[Any, int, str]] = [
        (b"{not json", 400, "M_NOT_JSON"),
        (b"[1, 2]", 400, "M_BAD_JSON"),
        ({"room_version": "9"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"room_version": "banana"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"preset": "everyone"}, 400, "M_INVALID_PARAM"),
        ({"visibility": "secret"}, 400, "M_INVALID_PARAM"),
        ({"name": 5}, 400, "M_BAD_JSON"),
        ({"invite": "not-a-list"}, 400, "M_BAD_JSON"),
        ({"invite": [5]}, 400, "M_BAD_JSON"),
        ({"invite": ["@nobody:test.local"]}, 404, "M_NOT_FOUND"),
        ({"initial_state": [{"type": "m.room.member", "state_key": "@x:y", "content": {}}]}, 400, None),
        ({"initial_state": [{"type": "x"}]}, 400, "M_BAD_JSON"),
        (
            {"initial_state": [{"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1"}}]},
            403,
            None,
        ),
        ({"power_level_content_override": {"users": {"@a:b": "high"}}}, 400, "M_BAD_JSON"),
        ({"power_level_content_override": []}, 400, "M_BAD_JSON"),
        ({"creation_content": {"type": 7}}, 400, None),
        ({"room_alias_name": "Not Valid!"}, 400, None),
        ({"invite_3pid": [{"medium": "email", "address": "a@b.c"}]}, 400, None),
        ({"is_direct": "yes"}, 400, "M_BAD_JSON"),
    ]
    for body, status, errcode in bad:
        err(await mx(client, alice, "POST", "/createRoom", body), status, errcode)
    await create(client, alice, room_alias_name="taken")
    err(await mx(client, alice, "POST", "/createRoom", {"room_alias_name": "taken"}), 400, "M_ROOM_IN_USE")
    # no token, bad token
    err(await mx(client, None, "POST", "/createRoom", {}), 401, "M_MISSING_TOKEN")
    r = await client.post(f"{M}/createRoom", headers={"Authorization": "Bearer nope"}, json={})
    err(r, 401, "M_UNKNOWN_TOKEN")


async def test_is_direct_from_create_reaches_invite_and_join(client, trio):
    alice, bob, _ = trio
    room = await create(client, alice, preset="trusted_private_chat", is_direct=True, invite=[bob.user_id])
    state = await state_of(client, alice, room)
    assert state[("m.room.member", bob.user_id)]["is_direct"] is True
    assert state[("m.room.member", bob.user_id)]["membership"] == "invite"
    assert ok(await mx(client, bob, "POST", f"/join/{enc(room)}")) == {"room_id": room}
    # the joiner's own member event keeps is_direct (clients decide "DM" from it)
    mine = ok(await mx(client, bob, "GET", f"/rooms/{enc(room)}/state/m.room.member/{enc(bob.user_id)}"))
    assert mine["membership"] == "join" and mine["is_direct"] is True
    joined = ok(await mx(client, bob, "GET", f"/rooms/{enc(room)}/joined_members"))["joined"]
    assert set(joined) == {alice.user_id, bob.user_id}
    # a plain invite (no is_direct) gives a plain join
    plain = await create(client, alice, invite=[bob.user_id])
    ok(await mx(client, bob, "POST", f"/rooms/{enc(plain)}/join"))
    member = ok(await mx(client, bob, "GET", f"/rooms/{enc(plain)}/state/m.room.member/{enc(bob.user_id)}"))
    assert "is_direct" not in member


# ---------------------------------------------------------------------------------------------
# membership


async def test_join_leave_forget_and_joined_rooms(client, trio):
    alice, bob, carol = trio
    public = await create(client, alice, visibility="public", room_alias_name="lobby")
    private = await create(client, alice)
    # by alias (percent-encoded '#'), with an ignored server_name
    r = await mx(client, bob, "POST", f"/join/{enc('#lobby:' + SERVER)}", {}, server_name="elsewhere.org")
    assert ok(r) == {"room_id": public}
    before = await timeline_f(client, alice, public)
    # joining again succeeds and writes nothing
    assert ok(await mx(client, bob, "POST", f"/join/{enc(public)}")) == {"room_id": public}
    assert ok(await mx(client, bob, "POST", f"/rooms/{enc(public)}/join", {"reason": "again"})) == {
        "room_id": public
    }
    assert await timeline_f(client, alice, public) == before
    # a private room needs an invite
    err(await mx(client, bob, "POST", f"/join/{enc(private)}"), 403, "M_FORBIDDEN")
    ok(await mx(client, alice, "POST", f"/rooms/{enc(private)}/invite", {"user_id": bob.user_id}))
    assert ok(await mx(client, bob, "POST", f"/join/{enc(private)}")) == {"room_id": private}
    assert set(ok(await mx(client, bob, "GET", "/joined_rooms"))["joined_rooms"]) == {public, private}
    # an invite is not a joined room
    ok(await mx(client, alice, "POST", f"/rooms/{enc(public)}/invite", {"user_id": carol.user_id}))
    assert public not in ok(await mx(client, carol, "GET", "/joined_rooms"))["joined_rooms"]
    # forget needs leaving first
    err(await mx(client, bob, "POST", f"/rooms/{enc(public)}/forget"), 400, "M_UNKNOWN")
    assert ok(await mx(client, bob, "POST", f"/rooms/{enc(public)}/leave", {"reason": "bye"})) == {}
    assert ok(await mx(client, bob, "POST", f"/rooms/{enc(public)}/forget")) == {}
    assert ok(await mx(client, bob, "GET", "/joined_rooms"))["joined_rooms"] == [private]
    leave = ok(await mx(client, alice, "GET", f"/rooms/{enc(public)}/state/m.room.member/{enc(bob.user_id)}"))
    assert leave == {"membership": "leave", "reason": "bye"}
    # unknown rooms and aliases
    err(await mx(client, bob, "POST", f"/join/{enc('!nope:' + SERVER)}"), 404, "M_NOT_FOUND")
    err(await mx(client, bob, "POST", f"/join/{enc('#nope:' + SERVER)}"), 404, "M_NOT_FOUND")
    err(await mx(client, bob, "POST", "/join/garbage"), 400)
    err(await mx(client, bob, "POST", f"/rooms/{enc('!nope:' + SERVER)}/leave"), 404, "M_NOT_FOUND")
    err(await mx(client, bob, "POST", f"/rooms/{enc('!nope:' + SERVER)}/forget"), 404, "M_NOT_FOUND")
    err(await mx(client, carol, "POST", f"/rooms/{enc(private)}/leave"), 403, "M_FORBIDDEN")
    err(await mx(client, bob, "POST", f"/join/{enc(public)}", b"{oops"), 400, "M_NOT_JSON")


async def test_invite_kick_ban_unban(client, trio):
    alice, bob, carol = trio
    room = await create(client, alice, visibility="public")
    ok(await mx(client, bob, "POST", f"/join/{enc(room)}"))
    path = f"/rooms/{enc(room)}"
    # bob (level 0) cannot kick or ban
    err(await mx(client, bob, "POST", f"{path}/kick", {"user_id": alice.user_id}), 403, "M_FORBIDDEN")
    err(await mx(client, bob, "POST", f"{path}/ban", {"user_id": alice.user_id}), 403, "M_FORBIDDEN")
    assert ok(await mx(client, alice, "POST", f"{path}/kick", {"user_id": bob.user_id, "reason": "r"})) == {}
    kicked = ok(await mx(client, alice, "GET", f"{path}/state/m.room.member/{enc(bob.user_id)}"))
    assert kicked == {"membership": "leave", "reason": "r"}
    assert ok(await mx(client, alice, "POST", f"{path}/ban", {"user_id": bob.user_id})) == {}
    err(await mx(client, bob, "POST", f"/join/{enc(room)}"), 403, "M_FORBIDDEN")
    err(await mx(client, alice, "POST", f"{path}/invite", {"user_id": bob.user_id}), 403, "M_FORBIDDEN")
    assert ok(await mx(client, alice, "POST", f"{path}/unban", {"user_id": bob.user_id})) == {}
    ok(await mx(client, bob, "POST", f"/join/{enc(room)}"))
    # invite errors
    err(await mx(client, alice, "POST", f"{path}/invite", {"user_id": bob.user_id}), 403, "M_FORBIDDEN")
    err(await mx(client, alice, "POST", f"{path}/invite", {}), 400, "M_MISSING_PARAM")
    err(await mx(client, alice, "POST", f"{path}/invite", {"user_id": 5}), 400, "M_BAD_JSON")
    err(await mx(client, alice, "POST", f"{path}/invite", b""), 400, "M_NOT_JSON")
    err(
        await mx(client, alice, "POST", f"{path}/invite", {"user_id": "@ghost:" + SERVER}), 404, "M_NOT_FOUND"
    )
    err(await mx(client, carol, "POST", f"{path}/invite", {"user_id": bob.user_id}), 403, "M_FORBIDDEN")
    ghost = f"/rooms/{enc('!ghost:' + SERVER)}"
    err(await mx(client, alice, "POST", f"{ghost}/invite", {"user_id": carol.user_id}), 404, "M_NOT_FOUND")
    err(await mx(client, alice, "POST", f"{path}/unban", {"user_id": carol.user_id}), 400)


# ---------------------------------------------------------------------------------------------
# state


async def test_state_get_and_put(client, trio):
    alice, bob, _ = trio
    room = await create(client, alice, name="n")
    path = f"/rooms/{enc(room)}"
    # the empty state key: with and without the trailing slash
    assert ok(await mx(client, alice, "GET", f"{path}/state/m.room.name")) == {"name": "n"}
    assert ok(await mx(client, alice, "GET", f"{path}/state/m.room.name/")) == {"name": "n"}
    err(await mx(client, alice, "GET", f"{path}/state/m.room.encryption/"), 404, "M_NOT_FOUND")
    err(await mx(client, alice, "GET", f"{path}/state/m.room.encryption"), 404, "M_NOT_FOUND")
    # PUT returns the event id; with a state key, and an empty one
    r = ok(await mx(client, alice, "PUT", f"{path}/state/m.room.topic/", {"topic": "t"}))
    assert r["event_id"].startswith("$")
    assert ok(await mx(client, alice, "GET", f"{path}/state/m.room.topic")) == {"topic": "t"}
    ok(await mx(client, alice, "PUT", f"{path}/state/m.room.name", {"name": "renamed"}))
    key = "@weird/key:with%stuff"
    ok(await mx(client, alice, "PUT", f"{path}/state/x.custom/{enc(key)}", {"v": 1}))
    assert ok(await mx(client, alice, "GET", f"{path}/state/x.custom/{enc(key)}")) == {"v": 1}
    state = await state_of(client, alice, room)
    assert state[("m.room.name", "")] == {"name": "renamed"}
    assert state[("x.custom", key)] == {"v": 1}
    # encryption is not offered
    err(
        await mx(
            client, alice, "PUT", f"{path}/state/m.room.encryption/", {"algorithm": "m.megolm.v1.aes-sha2"}
        ),
        403,
    )
    assert ("m.room.encryption", "") not in await state_of(client, alice, room)
    # bad input
    err(await mx(client, alice, "PUT", f"{path}/state/m.room.name", b"nope"), 400, "M_NOT_JSON")
    err(await mx(client, alice, "PUT", f"{path}/state/m.room.name", b'"str"'), 400, "M_BAD_JSON")
    err(await mx(client, alice, "PUT", f"{path}/state/m.room.name", {"name": 5}), 400, "M_BAD_JSON")
    err(
        await mx(client, alice, "PUT", f"{path}/state/m.room.join_rules", {"join_rule": "x"}),
        400,
        "M_BAD_JSON",
    )
    err(await mx(client, alice, "PUT", f"{path}/state/m.room.create", {}), 403, "M_FORBIDDEN")
    # outsiders can neither read nor write
    err(await mx(client, bob, "GET", f"{path}/state"), 403, "M_FORBIDDEN")
    err(await mx(client, bob, "GET", f"{path}/state/m.room.name"), 403, "M_FORBIDDEN")
    err(await mx(client, bob, "PUT", f"{path}/state/m.room.name", {"name": "x"}), 403, "M_FORBIDDEN")
    ghost = f"/rooms/{enc('!ghost:' + SERVER)}"
    err(await mx(client, alice, "GET", f"{ghost}/state"), 404, "M_NOT_FOUND")
    err(await mx(client, alice, "PUT", f"{ghost}/state/m.room.name", {"name": "x"}), 404, "M_NOT_FOUND")
    # power levels: bob, joined at level 0, cannot rename
    ok(await mx(client, alice, "POST", f"{path}/invite", {"user_id": bob.user_id}))
    ok(await mx(client, bob, "POST", f"{path}/join"))
    err(await mx(client, bob, "PUT", f"{path}/state/m.room.name", {"name": "x"}), 403, "M_FORBIDDEN")


async def test_member_state_put(client, trio):
    alice, bob, carol = trio
    room = await create(client, alice, visibility="public")
    path = f"/rooms/{enc(room)}"
    ok(await mx(client, bob, "POST", f"/join/{enc(room)}"))
    # a per-room display name
    r = ok(
        await mx(
            client,
            bob,
            "PUT",
            f"{path}/state/m.room.member/{enc(bob.user_id)}",
            {"membership": "join", "displayname": "Bobby"},
        )
    )
    assert r["event_id"].startswith("$")
    joined = ok(await mx(client, alice, "GET", f"{path}/joined_members"))["joined"]
    assert joined[bob.user_id]["display_name"] == "Bobby"
    # invite and kick through the state endpoint
    ok(
        await mx(
            client, alice, "PUT", f"{path}/state/m.room.member/{enc(carol.user_id)}", {"membership": "invite"}
        )
    )
    assert (
        ok(await mx(client, alice, "GET", f"{path}/state/m.room.member/{enc(carol.user_id)}"))["membership"]
        == "invite"
    )
    ok(
        await mx(
            client, alice, "PUT", f"{path}/state/m.room.member/{enc(bob.user_id)}", {"membership": "leave"}
        )
    )
    assert (
        ok(await mx(client, alice, "GET", f"{path}/state/m.room.member/{enc(bob.user_id)}"))["membership"]
        == "leave"
    )
    # one cannot join someone else, nor use an unknown membership
    err(
        await mx(
            client, alice, "PUT", f"{path}/state/m.room.member/{enc(bob.user_id)}", {"membership": "join"}
        ),
        403,
    )
    err(
        await mx(
            client, alice, "PUT", f"{path}/state/m.room.member/{enc(bob.user_id)}", {"membership": "dance"}
        ),
        400,
    )
    err(await mx(client, alice, "PUT", f"{path}/state/m.room.member/", {"membership": "join"}), 400)


async def test_members_and_joined_members(client, trio):
    alice, bob, carol = trio
    room = await create(client, alice, visibility="public")
    path = f"/rooms/{enc(room)}"
    ok(await mx(client, bob, "POST", f"/join/{enc(room)}"))
    early = ok(await mx(client, alice, "GET", f"{path}/messages", dir="b", limit=1))["start"]
    ok(await mx(client, alice, "POST", f"{path}/invite", {"user_id": carol.user_id}))
    ok(await mx(client, bob, "POST", f"{path}/leave"))

    def who(chunk: list[dict[str, Any]]) -> dict[str, str]:
        return {e["state_key"]: e["content"]["membership"] for e in chunk}

    chunk = ok(await mx(client, alice, "GET", f"{path}/members"))["chunk"]
    assert who(chunk) == {alice.user_id: "join", bob.user_id: "leave", carol.user_id: "invite"}
    for e in chunk:
        assert e["type"] == "m.room.member" and "position" not in e
    assert who(ok(await mx(client, alice, "GET", f"{path}/members", membership="join"))["chunk"]) == {
        alice.user_id: "join"
    }
    assert set(
        who(ok(await mx(client, alice, "GET", f"{path}/members", not_membership="leave"))["chunk"])
    ) == {
        alice.user_id,
        carol.user_id,
    }
    # at a token taken before the invite and the leave
    assert who(ok(await mx(client, alice, "GET", f"{path}/members", at=early))["chunk"]) == {
        alice.user_id: "join",
        bob.user_id: "join",
    }
    joined = ok(await mx(client, alice, "GET", f"{path}/joined_members"))["joined"]
    assert joined == {alice.user_id: {"display_name": None, "avatar_url": None}}
    err(await mx(client, alice, "GET", f"{path}/members", membership="dancing"), 400)
    err(await mx(client, alice, "GET", f"{path}/members", at="garbage"), 400)
    private = await create(client, alice)
    err(await mx(client, bob, "GET", f"/rooms/{enc(private)}/members"), 403, "M_FORBIDDEN")
    err(await mx(client, bob, "GET", f"/rooms/{enc(private)}/joined_members"), 403, "M_FORBIDDEN")
    err(await mx(client, bob, "GET", f"/rooms/{enc('!ghost:' + SERVER)}/joined_members"), 404, "M_NOT_FOUND")


# ---------------------------------------------------------------------------------------------
# directory


async def test_aliases(client, trio):
    alice, bob, _ = trio
    room = await create(client, alice, room_alias_name="first")
    alias = f"#second:{SERVER}"
    assert ok(await mx(client, alice, "PUT", f"/directory/room/{enc(alias)}", {"room_id": room})) == {}
    assert ok(await mx(client, None, "GET", f"/directory/room/{enc(alias)}")) == {
        "room_id": room,
        "servers": [SERVER],
    }
    assert ok(await mx(client, alice, "GET", f"/rooms/{enc(room)}/aliases"))["aliases"] == [
        f"#first:{SERVER}",
        alias,
    ]
    err(await mx(client, alice, "PUT", f"/directory/room/{enc(alias)}", {"room_id": room}), 409, "M_UNKNOWN")
    err(await mx(client, bob, "PUT", f"/directory/room/{enc('#bobs:' + SERVER)}", {"room_id": room}), 403)
    err(await mx(client, alice, "PUT", f"/directory/room/{enc('#x:elsewhere.org')}", {"room_id": room}), 400)
    err(await mx(client, alice, "PUT", f"/directory/room/{enc('#x:' + SERVER)}", {}), 400, "M_MISSING_PARAM")
    err(
        await mx(
            client, alice, "PUT", f"/directory/room/{enc('#x:' + SERVER)}", {"room_id": "!ghost:" + SERVER}
        ),
        404,
    )
    err(await mx(client, bob, "DELETE", f"/directory/room/{enc(alias)}"), 403, "M_FORBIDDEN")
    assert ok(await mx(client, alice, "DELETE", f"/directory/room/{enc(alias)}")) == {}
    err(await mx(client, None, "GET", f"/directory/room/{enc(alias)}"), 404, "M_NOT_FOUND")
    err(await mx(client, alice, "DELETE", f"/directory/room/{enc(alias)}"), 404, "M_NOT_FOUND")
    err(await mx(client, None, "GET", "/directory/room/no-sigil"), 400)
    err(await mx(client, bob, "GET", f"/rooms/{enc(room)}/aliases"), 403, "M_FORBIDDEN")


async def test_public_rooms_directory(client, trio):
    alice, bob, carol = trio
    big = await create(
        client, alice, visibility="public", name="Big Market", topic="buy and sell", room_alias_name="big"
    )
    small = await create(client, bob, visibility="public", name="Quiet corner")
    hidden = await create(client, alice, name="Big secret")
    space = await create(
        client, alice, visibility="public", name="A space", creation_content={"type": "m.space"}
    )
    for agent in (bob, carol):
        ok(await mx(client, agent, "POST", f"/join/{enc(big)}"))
    body = ok(await mx(client, None, "GET", "/publicRooms"))
    ids = [e["room_id"] for e in body["chunk"]]
    assert hidden not in ids
    assert {big, small, space} <= set(ids)
    assert ids.index(big) < ids.index(small)  # most members first
    entry = next(e for e in body["chunk"] if e["room_id"] == big)
    assert entry["name"] == "Big Market" and entry["topic"] == "buy and sell"
    assert entry["canonical_alias"] == f"#big:{SERVER}"
    assert entry["num_joined_members"] == 3
    assert entry["join_rule"] == "public"
    assert entry["world_readable"] is False and entry["guest_can_join"] is False
    assert "room_type" not in entry
    assert next(e for e in body["chunk"] if e["room_id"] == space)["room_type"] == "m.space"
    for e in body["chunk"]:
        assert all(v is not None for v in e.values()), e
    # paging with limit/since covers everything once
    seen: list[str] = []
    since = None
    for _ in range(50):
        params: dict[str, Any] = {"limit": 1}
        if since:
            params["since"] = since
        page = ok(await mx(client, None, "GET", "/publicRooms", **params))
        seen += [e["room_id"] for e in page["chunk"]]
        since = page.get("next_batch")
        if not since:
            break
    assert sorted(seen) == sorted(ids)
    # search (POST needs a token)
    r = ok(await mx(client, alice, "POST", "/publicRooms", {"filter": {"generic_search_term": "BIG MARK"}}))
    assert [e["room_id"] for e in r["chunk"]] == [big]
    r = ok(await mx(client, alice, "POST", "/publicRooms", {"filter": {"room_types": ["m.space"]}}))
    assert [e["room_id"] for e in r["chunk"]] == [space]
    r = ok(await mx(client, alice, "POST", "/publicRooms", {"filter": {"room_types": [None]}}))
    assert space not in [e["room_id"] for e in r["chunk"]]
    err(await mx(client, None, "POST", "/publicRooms", {}), 401)
    err(await mx(client, alice, "POST", "/publicRooms", {"limit": "x"}), 400, "M_BAD_JSON")
    err(await mx(client, alice, "POST", "/publicRooms", {"filter": []}), 400, "M_BAD_JSON")
    err(await mx(client, None, "GET", "/publicRooms", since="garbage"), 400)
    err(await mx(client, None, "GET", "/publicRooms", limit="x"), 400)
    # listing and unlisting
    assert (
        ok(await mx(client, alice, "PUT", f"/directory/list/room/{enc(hidden)}", {"visibility": "public"}))
        == {}
    )
    assert hidden in [e["room_id"] for e in ok(await mx(client, None, "GET", "/publicRooms"))["chunk"]]
    ok(await mx(client, alice, "PUT", f"/directory/list/room/{enc(hidden)}", {"visibility": "private"}))
    assert ok(await mx(client, None, "GET", f"/directory/list/room/{enc(hidden)}")) == {
        "visibility": "private"
    }
    err(await mx(client, bob, "PUT", f"/directory/list/room/{enc(big)}", {"visibility": "private"}), 403)
    err(await mx(client, alice, "PUT", f"/directory/list/room/{enc(big)}", {"visibility": "open"}), 400)
    err(await mx(client, None, "GET", f"/directory/list/room/{enc('!ghost:' + SERVER)}"), 404, "M_NOT_FOUND")


async def test_native_and_matrix_see_the_same_room(client, trio):
    alice, bob, _ = trio
    room = await create(client, alice, visibility="public", name="shared")
    ok(await mx(client, bob, "POST", f"/join/{enc(room)}"))
    native_id = await send(client, bob, room, "from the native API")
    r = ok(
        await mx(
            client,
            alice,
            "PUT",
            f"/rooms/{enc(room)}/send/m.room.message/t1",
            {"msgtype": "m.text", "body": "from Matrix"},
        )
    )
    chunk = (
        await client.get(f"/api/v1/rooms/{room}/messages", headers=bob.headers, params={"dir": "f"})
    ).json()["chunk"]
    ids = [e["event_id"] for e in chunk]
    assert native_id in ids and r["event_id"] in ids
