"""Matrix façade, users area: profiles (and their member events), presence, account data and the
user directory. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from tests.helpers import Agent, register

V3 = "/_matrix/client/v3"
API = "/api/v1"


def assert_error(r: httpx.Response, status: int, errcode: str) -> None:
    assert r.status_code == status, r.text
    assert r.json().get("errcode") == errcode, r.json()
    assert isinstance(r.json().get("error"), str)


async def create_room(client: httpx.AsyncClient, agent: Agent, **body: Any) -> str:
    r = await client.post(f"{API}/rooms", headers=agent.headers, json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["room_id"])


async def join(client: httpx.AsyncClient, agent: Agent, room: str) -> None:
    r = await client.post(f"{API}/rooms/{room}/join", headers=agent.headers)
    assert r.status_code == 200, r.text


async def member_content(client: httpx.AsyncClient, agent: Agent, room: str, user: str) -> dict[str, Any]:
    r = await client.get(f"{API}/rooms/{room}/state/m.room.member/{quote(user)}", headers=agent.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body.get("content", body)


# -- profiles --------------------------------------------------------------------------------------


async def test_profile_read_and_displayname_change_reaches_member_events(
    client: httpx.AsyncClient, reg_token: str
) -> None:
    alice = await register(client, "alice", reg_token, display_name="Alice")
    bob = await register(client, "bob", reg_token)
    room = await create_room(client, alice, name="r", visibility="public")
    other = await create_room(client, alice, name="r2", visibility="public")
    await join(client, bob, room)
    await join(client, bob, other)
    await client.post(f"{API}/rooms/{other}/leave", headers=bob.headers)

    # readable without a token
    r = await client.get(f"{V3}/profile/@alice:test.local")
    assert r.status_code == 200 and r.json() == {"displayname": "Alice"}
    r = await client.get(f"{V3}/profile/@bob:test.local", headers=bob.headers)
    assert r.json() == {}
    r = await client.get(f"{V3}/profile/@bob:test.local/displayname")
    assert r.status_code == 200 and r.json() == {}

    r = await client.put(
        f"{V3}/profile/@bob:test.local/displayname", headers=bob.headers, json={"displayname": "Bobby"}
    )
    assert r.status_code == 200 and r.json() == {}
    r = await client.get(f"{V3}/profile/@bob:test.local/displayname")
    assert r.json() == {"displayname": "Bobby"}
    # the joined room got a new member event with the name; the room bob left did not
    content = await member_content(client, alice, room, bob.user_id)
    assert content == {"membership": "join", "displayname": "Bobby"}
    assert (await member_content(client, alice, other, bob.user_id))["membership"] == "leave"
    # the native API sees the same profile
    r = await client.get(f"{API}/agents/@bob:test.local", headers=alice.headers)
    assert r.json()["display_name"] == "Bobby"
    # setting the same name again writes nothing
    before = await client.get(
        f"{API}/rooms/{room}/messages", headers=alice.headers, params={"dir": "b", "limit": 1}
    )
    await client.put(
        f"{V3}/profile/@bob:test.local/displayname", headers=bob.headers, json={"displayname": "Bobby"}
    )
    after = await client.get(
        f"{API}/rooms/{room}/messages", headers=alice.headers, params={"dir": "b", "limit": 1}
    )
    assert before.json()["chunk"][0]["event_id"] == after.json()["chunk"][0]["event_id"]
    # an empty name clears it
    await client.put(
        f"{V3}/profile/@bob:test.local/displayname", headers=bob.headers, json={"displayname": ""}
    )
    assert (await client.get(f"{V3}/profile/@bob:test.local")).json() == {}
    assert await member_content(client, alice, room, bob.user_id) == {"membership": "join"}


async def test_avatar_url(client: httpx.AsyncClient, reg_token: str) -> None:
    alice = await register(client, "alice", reg_token)
    room = await create_room(client, alice, name="r")
    url = "mxc://test.local/abcdef"
    r = await client.put(
        f"{V3}/profile/@alice:test.local/avatar_url", headers=alice.headers, json={"avatar_url": url}
    )
    assert r.status_code == 200, r.text
    assert (await client.get(f"{V3}/profile/@alice:test.local/avatar_url")).json() == {"avatar_url": url}
    assert (await client.get(f"{V3}/profile/@alice:test.local")).json() == {"avatar_url": url}
    assert (await member_content(client, alice, room, alice.user_id))["avatar_url"] == url


async def test_profile_errors(client: httpx.AsyncClient, reg_token: str) -> None:
    alice = await register(client, "alice", reg_token)
    await register(client, "bob", reg_token)
    assert_error(await client.get(f"{V3}/profile/@nobody:test.local"), 404, "M_NOT_FOUND")
    assert_error(await client.get(f"{V3}/profile/@alice:elsewhere.org"), 404, "M_NOT_FOUND")
    assert_error(await client.get(f"{V3}/profile/@nobody:test.local/displayname"), 404, "M_NOT_FOUND")
    assert_error(await client.get(f"{V3}/profile/alice"), 400, "M_INVALID_PARAM")
    assert_error(
        await client.get(f"{V3}/profile/@alice:test.local", headers={"Authorization": "Bearer x"}),
        401,
        "M_UNKNOWN_TOKEN",
    )
    path = f"{V3}/profile/@alice:test.local/displayname"
    assert_error(await client.put(path, json={"displayname": "x"}), 401, "M_MISSING_TOKEN")
    assert_error(
        await client.put(
            f"{V3}/profile/@bob:test.local/displayname", headers=alice.headers, json={"displayname": "x"}
        ),
        403,
        "M_FORBIDDEN",
    )
    assert_error(
        await client.put(
            f"{V3}/profile/@bob:test.local/avatar_url", headers=alice.headers, json={"avatar_url": "x"}
        ),
        403,
        "M_FORBIDDEN",
    )
    assert_error(
        await client.put(
            f"{V3}/profile/@zed:test.local/displayname", headers=alice.headers, json={"displayname": "x"}
        ),
        404,
        "M_NOT_FOUND",
    )
    assert_error(await client.put(path, headers=alice.headers, json={}), 400, "M_MISSING_PARAM")
    assert_error(await client.put(path, headers=alice.headers, json={"displayname": 3}), 400, "M_BAD_JSON")
    assert_error(
        await client.put(path, headers=alice.headers, json={"displayname": "x" * 300}), 400, "M_TOO_LARGE"
    )
    assert_error(await client.put(path, headers=alice.headers, content=b"nope"), 400, "M_NOT_JSON")
    avatar = f"{V3}/profile/@alice:test.local/avatar_url"
    assert_error(
        await client.put(avatar, headers=alice.headers, json={"avatar_url": ["x"]}), 400, "M_BAD_JSON"
    )
    assert_error(await client.put(avatar, headers=alice.headers, json={}), 400, "M_MISSING_PARAM")


# -- presence --------------------------------------------------------------------------------------


async def test_presence(client: httpx.AsyncClient, reg_token: str) -> None:
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    r = await client.get(f"{V3}/presence/@bob:test.local/status", headers=alice.headers)
    assert r.status_code == 200 and r.json()["presence"] == "offline"
    path = f"{V3}/presence/@alice:test.local/status"
    r = await client.put(path, headers=alice.headers, json={"presence": "online", "status_msg": "trading"})
    assert r.status_code == 200 and r.json() == {}
    body = (await client.get(path, headers=bob.headers)).json()
    assert body["presence"] == "online" and body["status_msg"] == "trading"
    assert body["currently_active"] is True and body["last_active_ago"] >= 0
    await client.put(path, headers=alice.headers, json={"presence": "unavailable"})
    assert (await client.get(path, headers=bob.headers)).json()["presence"] == "unavailable"

    assert_error(await client.put(path, headers=bob.headers, json={"presence": "online"}), 403, "M_FORBIDDEN")
    assert_error(
        await client.put(path, headers=alice.headers, json={"presence": "busy"}), 400, "M_INVALID_PARAM"
    )
    assert_error(await client.put(path, headers=alice.headers, json={}), 400, "M_MISSING_PARAM")
    assert_error(
        await client.put(path, headers=alice.headers, json={"presence": "online", "status_msg": 1}),
        400,
        "M_BAD_JSON",
    )
    assert_error(
        await client.get(f"{V3}/presence/@nobody:test.local/status", headers=bob.headers), 404, "M_NOT_FOUND"
    )
    assert_error(await client.get(path), 401, "M_MISSING_TOKEN")


# -- account data ----------------------------------------------------------------------------------


async def test_global_and_room_account_data(client: httpx.AsyncClient, reg_token: str) -> None:
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    room = await create_room(client, alice, name="r")
    path = f"{V3}/user/@alice:test.local/account_data/m.direct"
    assert_error(await client.get(path, headers=alice.headers), 404, "M_NOT_FOUND")
    direct = {"@bob:test.local": [room]}
    r = await client.put(path, headers=alice.headers, json=direct)
    assert r.status_code == 200 and r.json() == {}
    assert (await client.get(path, headers=alice.headers)).json() == direct
    await client.put(path, headers=alice.headers, json={})
    assert (await client.get(path, headers=alice.headers)).json() == {}
    assert_error(await client.get(path, headers=bob.headers), 403, "M_FORBIDDEN")
    assert_error(await client.put(path, headers=bob.headers, json={}), 403, "M_FORBIDDEN")
    assert_error(await client.put(path, headers=alice.headers, json=[1]), 400, "M_BAD_JSON")
    assert_error(await client.put(path, headers=alice.headers, content=b"{"), 400, "M_NOT_JSON")
    assert_error(
        await client.get(f"{V3}/user/alice/account_data/x", headers=alice.headers), 400, "M_INVALID_PARAM"
    )

    room_path = f"{V3}/user/@alice:test.local/rooms/{room}/account_data/m.tag"
    assert_error(await client.get(room_path, headers=alice.headers), 404, "M_NOT_FOUND")
    r = await client.put(room_path, headers=alice.headers, json={"tags": {"u.work": {}}})
    assert r.status_code == 200, r.text
    assert (await client.get(room_path, headers=alice.headers)).json() == {"tags": {"u.work": {}}}
    # room data and global data of the same type are apart
    assert_error(
        await client.get(f"{V3}/user/@alice:test.local/account_data/m.tag", headers=alice.headers),
        404,
        "M_NOT_FOUND",
    )
    assert_error(
        await client.put(
            f"{V3}/user/@alice:test.local/rooms/!nope:test.local/account_data/m.tag",
            headers=alice.headers,
            json={},
        ),
        404,
        "M_NOT_FOUND",
    )
    assert_error(
        await client.put(
            f"{V3}/user/@alice:test.local/rooms/nope/account_data/m.tag", headers=alice.headers, json={}
        ),
        400,
        "M_INVALID_PARAM",
    )
    assert_error(
        await client.get(f"{V3}/user/@alice:test.local/rooms/{room}/account_data/m.tag", headers=bob.headers),
        403,
        "M_FORBIDDEN",
    )


# -- user directory --------------------------------------------------------------------------------


async def test_user_directory(client: httpx.AsyncClient, reg_token: str) -> None:
    alice = await register(client, "alice", reg_token, display_name="Alice Trader")
    bob = await register(client, "bob", reg_token, display_name="Bob 100%")
    carol = await register(client, "carol", reg_token)
    dave = await register(client, "dave", reg_token)
    eve = await register(client, "eve-trader", reg_token)
    public = await create_room(client, alice, name="pub", visibility="public")
    await join(client, bob, public)
    private = await create_room(client, dave, name="secret")
    r = await client.post(
        f"{API}/rooms/{private}/invite", headers=dave.headers, json={"user_id": eve.user_id}
    )
    assert r.status_code == 200
    await join(client, eve, private)

    async def search(agent: Agent, term: str, **extra: Any) -> dict[str, Any]:
        r = await client.post(
            f"{V3}/user_directory/search", headers=agent.headers, json={"search_term": term, **extra}
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    # carol shares no room but sees the agents of public rooms; not eve (only in a private room)
    found = await search(carol, "trader")
    assert found == {
        "results": [{"user_id": "@alice:test.local", "display_name": "Alice Trader"}],
        "limited": False,
    }
    # dave shares a room with eve
    assert [u["user_id"] for u in (await search(dave, "TRADER"))["results"]] == [
        "@alice:test.local",
        "@eve-trader:test.local",
    ]
    # LIKE wildcards are literal
    assert [u["user_id"] for u in (await search(carol, "100%"))["results"]] == ["@bob:test.local"]
    assert (await search(carol, "_"))["results"] == []
    # by handle and user id; limited when cut
    page = await search(dave, "e", limit=1)
    assert len(page["results"]) == 1 and page["limited"] is True
    assert (await search(carol, "   "))["results"] == []

    path = f"{V3}/user_directory/search"
    assert_error(await client.post(path, headers=carol.headers, json={}), 400, "M_MISSING_PARAM")
    assert_error(await client.post(path, headers=carol.headers, json={"search_term": 1}), 400, "M_BAD_JSON")
    assert_error(
        await client.post(path, headers=carol.headers, json={"search_term": "a", "limit": 0}),
        400,
        "M_INVALID_PARAM",
    )
    assert_error(
        await client.post(path, headers=carol.headers, json={"search_term": "a", "limit": "3"}),
        400,
        "M_BAD_JSON",
    )
    assert_error(await client.post(path, json={"search_term": "a"}), 401, "M_MISSING_TOKEN")
