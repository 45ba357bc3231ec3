"""Matrix filters and /sync, on both backends. Rooms are set up through the native REST API
(the same actions the Matrix room endpoints call)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from clawlist.actions import account_data
from clawlist.actions.actor import Actor
from tests.helpers import Agent, login, register, send

API = "/api/v1"
MX = "/_matrix/client/v3"


async def _room(client: httpx.AsyncClient, owner: Agent, *joiners: Agent, name: str | None = "s") -> str:
    body: dict[str, Any] = {"visibility": "public"}
    if name:
        body["name"] = name
    r = await client.post(f"{API}/rooms", headers=owner.headers, json=body)
    assert r.status_code == 201, r.text
    room = str(r.json()["room_id"])
    for who in joiners:
        assert (await client.post(f"{API}/rooms/{room}/join", headers=who.headers)).status_code == 200
    return room


async def settle(client: httpx.AsyncClient) -> None:
    """Wait until the event feed has read every committed event (it reads asynchronously after a
    commit), so a sync that follows sees everything the test wrote before it."""
    from clawlist.actions.sync import db_head

    svc = client._transport.app.state.services  # type: ignore[attr-defined]
    head = await db_head(svc)
    for _ in range(500):
        if svc.feed.head >= head:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the event feed did not catch up")


async def _sync(client: httpx.AsyncClient, agent: Agent, **params: Any) -> dict[str, Any]:
    await settle(client)
    r = await client.get(f"{MX}/sync", headers=agent.headers, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def until(
    client: httpx.AsyncClient, agent: Agent, poll: asyncio.Task[httpx.Response], done: Any
) -> dict[str, Any]:
    """The first answer for which `done(body)` holds: the pending long-poll's, or a follow-up's
    (another change, such as a presence announcement, may wake the poll first). Each follow-up
    long-polls too, so the test still proves that the change wakes a waiting sync."""
    r = await asyncio.wait_for(poll, 5)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    for _ in range(5):
        if done(body):
            return body
        r = await client.get(
            f"{MX}/sync", headers=agent.headers, params={"since": body["next_batch"], "timeout": 5000}
        )
        body = r.json()
    raise AssertionError(f"never came: {body}")


def _ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] for e in events]


def _bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"].get("body") for e in events if e["type"] == "m.room.message"]


def _actor(app_env: dict[str, Any], agent: Agent) -> Actor:
    """The actor behind an agent's token, for calling an action the Matrix routes of another area
    expose (account data)."""
    import jwt

    claims = jwt.decode(agent.access_token, options={"verify_signature": False})
    return Actor(principal_id=agent.user_id, kind="agent", session_id=claims["sid"])


# -- filters -------------------------------------------------------------------------------------


async def test_filter_create_get_and_dedupe(client, reg_token):
    alice = await register(client, "alice", reg_token)
    definition = {"room": {"timeline": {"limit": 5, "unread_thread_notifications": True}}}
    r = await client.post(f"{MX}/user/{alice.user_id}/filter", headers=alice.headers, json=definition)
    assert r.status_code == 200, r.text
    filter_id = r.json()["filter_id"]
    assert isinstance(filter_id, str)
    r = await client.get(f"{MX}/user/{alice.user_id}/filter/{filter_id}", headers=alice.headers)
    assert r.status_code == 200 and r.json() == definition
    # the same definition again: the same id (clients post their filter at every start)
    r = await client.post(f"{MX}/user/{alice.user_id}/filter", headers=alice.headers, json=definition)
    assert r.json()["filter_id"] == filter_id
    r = await client.post(f"{MX}/user/{alice.user_id}/filter", headers=alice.headers, json={"presence": {}})
    assert r.json()["filter_id"] != filter_id


async def test_filter_errors(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    r = await client.post(f"{MX}/user/{alice.user_id}/filter", headers=bob.headers, json={})
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    url = f"{MX}/user/{alice.user_id}/filter"
    for bad in (
        {"room": {"timeline": {"limit": "ten"}}},
        {"room": {"timeline": {"limit": -1}}},
        {"room": {"rooms": "!a:b"}},
        {"room": {"rooms": ["not-a-room"]}},
        {"presence": {"senders": ["nobody"]}},
        {"event_fields": [1]},
        {"event_format": "xml"},
        {"room": {"state": {"lazy_load_members": "yes"}}},
        {"room": []},
    ):
        r = await client.post(url, headers=alice.headers, json=bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["errcode"] == "M_BAD_JSON", bad
    r = await client.post(url, headers=alice.headers, content=b"{nope")
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"
    r = await client.post(url, headers=alice.headers, content=b"[]")
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    r = await client.get(f"{url}/12345", headers=alice.headers)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = await client.get(f"{url}/abc", headers=alice.headers)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    filter_id = (await client.post(url, headers=alice.headers, json={})).json()["filter_id"]
    r = await client.get(f"{url}/{filter_id}", headers=bob.headers)
    assert r.status_code == 403
    # bob cannot use alice's filter id: it is not his
    r = await client.get(f"{MX}/sync", headers=bob.headers, params={"filter": "999999"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"


async def test_filter_limit_per_user(settings_for):
    from clawlist.app import create_app

    app = create_app(settings_for(max_filters_per_user=2), announce=lambda _text: None)
    async with app.router.lifespan_context(app):
        token = app.state.first_start.registration_token
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            alice = await register(client, "alice", token)
            url = f"{MX}/user/{alice.user_id}/filter"
            for limit in (1, 2):
                r = await client.post(
                    url, headers=alice.headers, json={"room": {"timeline": {"limit": limit}}}
                )
                assert r.status_code == 200
            r = await client.post(url, headers=alice.headers, json={"room": {"timeline": {"limit": 3}}})
            assert r.status_code == 400 and r.json()["errcode"]
            # an existing definition is still answered
            r = await client.post(url, headers=alice.headers, json={"room": {"timeline": {"limit": 1}}})
            assert r.status_code == 200


# -- initial and incremental ---------------------------------------------------------------------


async def test_initial_sync_shape(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    room = await _room(client, alice, bob)
    hello = await send(client, alice, room, "hello")
    # OpenClaw's first sync: the filter inline, timeout 0 and an unknown cache buster
    body = await _sync(
        client,
        bob,
        filter=json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}}),
        timeout=0,
        _cacheBuster="12345",
    )
    assert isinstance(body["next_batch"], str)
    for key, empty in (
        ("to_device", {"events": []}),
        ("device_lists", {"changed": [], "left": []}),
        ("device_one_time_keys_count", {}),
        ("device_unused_fallback_key_types", []),
    ):
        assert body[key] == empty
    assert set(body["rooms"]) >= {"join", "invite", "leave"}
    joined = body["rooms"]["join"][room]
    timeline = joined["timeline"]
    assert hello in _ids(timeline["events"])
    assert isinstance(timeline["limited"], bool) and timeline["prev_batch"].startswith("p")
    # the joiner's own join event is in the timeline
    assert any(
        e["type"] == "m.room.member"
        and e["state_key"] == bob.user_id
        and e["content"]["membership"] == "join"
        for e in timeline["events"]
    )
    for e in timeline["events"]:
        assert "position" not in e and e["event_id"].startswith("$")
        assert isinstance(e["origin_server_ts"], int)
    # state and timeline together make the room's state; state holds nothing the timeline holds
    state_types = {e["type"] for e in joined["state"]["events"] + timeline["events"] if "state_key" in e}
    assert "m.room.create" in state_types and "m.room.power_levels" in state_types
    assert not set(_ids(joined["state"]["events"])) & set(_ids(timeline["events"]))
    short = (await _sync(client, bob, filter=json.dumps({"room": {"timeline": {"limit": 1}}})))["rooms"][
        "join"
    ]
    assert _ids(short[room]["timeline"]["events"]) == [hello] and short[room]["timeline"]["limited"] is True
    state_types = {e["type"] for e in short[room]["state"]["events"]}
    assert {"m.room.create", "m.room.power_levels", "m.room.name", "m.room.member"} <= state_types
    assert joined["summary"]["m.joined_member_count"] == 2
    assert joined["summary"]["m.invited_member_count"] == 0
    assert "m.heroes" not in joined["summary"]  # the room has a name
    assert joined["unread_notifications"] == {}
    assert joined["ephemeral"] == {"events": []} and joined["account_data"] == {"events": []}
    # presence: bob sees himself online (the sync marked him active)
    presence = {e["sender"]: e["content"] for e in body["presence"]["events"]}
    assert presence[bob.user_id]["presence"] == "online"


async def test_heroes_for_unnamed_room(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    room = await _room(client, alice, bob, name=None)
    body = await _sync(client, bob)
    assert body["rooms"]["join"][room]["summary"]["m.heroes"] == [alice.user_id]


async def test_incremental_sync_and_long_poll_on_message(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    room = await _room(client, alice, bob)
    token = (await _sync(client, bob))["next_batch"]
    body = await _sync(client, bob, since=token, timeout=0)
    assert body["rooms"]["join"] == {} and body["rooms"]["invite"] == {}
    token = body["next_batch"]
    poll = asyncio.create_task(
        client.get(f"{MX}/sync", headers=bob.headers, params={"since": token, "timeout": 10000})
    )
    await asyncio.sleep(0.3)
    assert not poll.done()
    event_id = await send(client, alice, room, "after")
    body = await until(client, bob, poll, lambda b: room in b["rooms"]["join"])
    joined = body["rooms"]["join"][room]
    assert _ids(joined["timeline"]["events"]) == [event_id]
    assert joined["timeline"]["limited"] is False
    assert joined["state"]["events"] == []
    # a long-poll with nothing new times out with an empty answer and a usable token
    token = body["next_batch"]
    body = await _sync(client, bob, since=token, timeout=300)
    assert body["rooms"]["join"] == {}
    assert body["next_batch"]
    # without a limit in the filter, an incremental sync holds every event since the token
    burst = [await send(client, alice, room, f"burst {i}") for i in range(15)]
    body = await _sync(client, bob, since=body["next_batch"], timeout=0)
    timeline = body["rooms"]["join"][room]["timeline"]
    assert _ids(timeline["events"]) == burst and timeline["limited"] is False


async def test_long_poll_wakes_on_typing_and_receipt(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    room = await _room(client, alice, bob)
    event_id = await send(client, alice, room, "read me")
    token = (await _sync(client, bob))["next_batch"]
    # drain presence announcements from the logins and first syncs
    token = (await _sync(client, bob, since=token, timeout=0))["next_batch"]

    poll = asyncio.create_task(
        client.get(f"{MX}/sync", headers=bob.headers, params={"since": token, "timeout": 10000})
    )
    await asyncio.sleep(0.2)
    r = await client.post(f"{API}/rooms/{room}/typing", headers=alice.headers, json={"typing": True})
    assert r.status_code == 200
    body = await until(client, bob, poll, lambda b: room in b["rooms"]["join"])
    eph = {e["type"]: e["content"] for e in body["rooms"]["join"][room]["ephemeral"]["events"]}
    assert eph["m.typing"] == {"user_ids": [alice.user_id]}
    token = body["next_batch"]

    poll = asyncio.create_task(
        client.get(f"{MX}/sync", headers=bob.headers, params={"since": token, "timeout": 10000})
    )
    await asyncio.sleep(0.2)
    r = await client.post(f"{API}/rooms/{room}/receipts", headers=alice.headers, json={"event_id": event_id})
    assert r.status_code == 200
    body = await until(client, bob, poll, lambda b: room in b["rooms"]["join"])
    eph = {e["type"]: e["content"] for e in body["rooms"]["join"][room]["ephemeral"]["events"]}
    assert eph["m.receipt"] == {event_id: {"m.read": {alice.user_id: {"ts": pytest.approx(0, abs=1e15)}}}}
    assert "m.typing" not in eph  # typing did not change


async def test_long_poll_wakes_on_account_data(app_env, client, reg_token):
    svc = app_env["services"]
    alice = await register(client, "alice", reg_token)
    room = await _room(client, alice)
    body = await _sync(client, alice)
    token = body["next_batch"]
    assert body["account_data"]["events"] == []
    token = (await _sync(client, alice, since=token, timeout=0))["next_batch"]
    actor = _actor(app_env, alice)

    poll = asyncio.create_task(
        client.get(f"{MX}/sync", headers=alice.headers, params={"since": token, "timeout": 10000})
    )
    await asyncio.sleep(0.2)
    assert not poll.done()
    direct = {"@bob:test.local": [room]}
    await account_data.put(svc, actor, alice.user_id, "m.direct", direct)
    body = await until(client, alice, poll, lambda b: b["account_data"]["events"])
    assert body["account_data"]["events"] == [{"type": "m.direct", "content": direct}]
    token = body["next_batch"]
    # room account data goes to the room; the global one is not sent again
    await account_data.put(svc, actor, alice.user_id, "m.fully_read", {"event_id": "$x"}, room_id=room)
    body = await _sync(client, alice, since=token, timeout=5000)
    assert body["account_data"]["events"] == []
    assert body["rooms"]["join"][room]["account_data"]["events"] == [
        {"type": "m.fully_read", "content": {"event_id": "$x"}}
    ]
    # an initial sync carries all of it
    body = await _sync(client, alice)
    assert {"type": "m.direct", "content": direct} in body["account_data"]["events"]
    assert body["rooms"]["join"][room]["account_data"]["events"] == [
        {"type": "m.fully_read", "content": {"event_id": "$x"}}
    ]
    # another user's account data changes wake nothing for alice
    bob = await register(client, "bob", reg_token)
    token = body["next_batch"]
    token = (await _sync(client, alice, since=token, timeout=0))["next_batch"]
    await account_data.put(svc, _actor(app_env, bob), bob.user_id, "m.direct", {})
    body = await _sync(client, alice, since=token, timeout=300)
    assert body["account_data"]["events"] == []


async def test_invite_then_join(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    r = await client.post(f"{API}/rooms", headers=alice.headers, json={"name": "secret"})
    room = r.json()["room_id"]
    await send(client, alice, room, "before the invite")
    token = (await _sync(client, bob))["next_batch"]
    token = (await _sync(client, bob, since=token, timeout=0))["next_batch"]

    poll = asyncio.create_task(
        client.get(f"{MX}/sync", headers=bob.headers, params={"since": token, "timeout": 10000})
    )
    await asyncio.sleep(0.2)
    r = await client.post(f"{API}/rooms/{room}/invite", headers=alice.headers, json={"user_id": bob.user_id})
    assert r.status_code == 200, r.text
    body = await until(client, bob, poll, lambda b: room in b["rooms"]["invite"])
    assert room not in body["rooms"]["join"]
    invite_state = body["rooms"]["invite"][room]["invite_state"]["events"]
    by_type = {(e["type"], e["state_key"]): e for e in invite_state}
    assert ("m.room.create", "") in by_type and ("m.room.join_rules", "") in by_type
    assert by_type[("m.room.name", "")]["content"] == {"name": "secret"}
    own = by_type[("m.room.member", bob.user_id)]
    assert own["content"]["membership"] == "invite" and own["sender"] == alice.user_id
    for e in invite_state:
        assert set(e) == {"type", "state_key", "sender", "content"}
    # an initial sync shows the invite too
    initial = await _sync(client, bob)
    assert room in initial["rooms"]["invite"] and room not in initial["rooms"]["join"]

    token = body["next_batch"]
    assert (await client.post(f"{API}/rooms/{room}/join", headers=bob.headers)).status_code == 200
    body = await _sync(client, bob, since=token, timeout=5000)
    assert room not in body["rooms"]["invite"]
    joined = body["rooms"]["join"][room]
    timeline = joined["timeline"]["events"]
    assert timeline[-1]["type"] == "m.room.member" and timeline[-1]["state_key"] == bob.user_id
    assert timeline[-1]["content"]["membership"] == "join"
    # a room joined since the token comes with its whole state and history
    state_types = {e["type"] for e in joined["state"]["events"] + timeline if "state_key" in e}
    assert {"m.room.create", "m.room.power_levels"} <= state_types
    assert "before the invite" in _bodies(timeline)
    assert joined["summary"]["m.joined_member_count"] == 2


async def test_leave_and_kick_show_in_leave(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    room = await _room(client, alice, bob)
    token = (await _sync(client, bob))["next_batch"]
    seen = await send(client, alice, room, "while bob is here")
    r = await client.post(f"{API}/rooms/{room}/kick", headers=alice.headers, json={"user_id": bob.user_id})
    assert r.status_code == 200, r.text
    kick_id = r.json()["event_id"]
    await send(client, alice, room, "after bob is gone")
    body = await _sync(client, bob, since=token, timeout=0)
    assert room not in body["rooms"]["join"]
    left = body["rooms"]["leave"][room]
    ids = _ids(left["timeline"]["events"])
    assert ids == [seen, kick_id]
    assert "after bob is gone" not in _bodies(left["timeline"]["events"])
    # the next sync does not show the room any more
    token = body["next_batch"]
    await send(client, alice, room, "still gone")
    body = await _sync(client, bob, since=token, timeout=0)
    assert room not in body["rooms"]["leave"] and room not in body["rooms"]["join"]

    # a room one leaves oneself, during a long-poll
    room2 = await _room(client, alice, bob)
    body = await _sync(client, bob, since=body["next_batch"], timeout=5000)
    assert room2 in body["rooms"]["join"]
    token = body["next_batch"]
    poll = asyncio.create_task(
        client.get(f"{MX}/sync", headers=bob.headers, params={"since": token, "timeout": 10000})
    )
    await asyncio.sleep(0.2)
    assert (await client.post(f"{API}/rooms/{room2}/leave", headers=bob.headers)).status_code == 200
    body = await until(client, bob, poll, lambda b: room2 in b["rooms"]["leave"])
    events = body["rooms"]["leave"][room2]["timeline"]["events"]
    assert events[-1]["content"]["membership"] == "leave"


# -- filters applied -----------------------------------------------------------------------------


async def test_timeline_limit_limited_and_prev_batch(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    room = await _room(client, alice, bob)
    sent = [await send(client, alice, room, f"m{i}") for i in range(6)]
    filt = json.dumps({"room": {"timeline": {"limit": 2}}})
    body = await _sync(client, bob, filter=filt)
    timeline = body["rooms"]["join"][room]["timeline"]
    assert _ids(timeline["events"]) == sent[-2:]
    assert timeline["limited"] is True
    # prev_batch pages back from just before the first timeline event
    r = await client.get(
        f"{API}/rooms/{room}/messages",
        headers=bob.headers,
        params={"from": timeline["prev_batch"], "dir": "b", "limit": 2},
    )
    assert r.status_code == 200, r.text
    assert _ids(r.json()["chunk"]) == [sent[3], sent[2]]
    token = body["next_batch"]
    # an incremental sync with more events than the limit is limited too, with a stored filter
    filter_id = (
        await client.post(
            f"{MX}/user/{bob.user_id}/filter", headers=bob.headers, json={"room": {"timeline": {"limit": 2}}}
        )
    ).json()["filter_id"]
    r = await client.put(
        f"{API}/rooms/{room}/state/m.room.topic", headers=alice.headers, json={"content": {"topic": "t"}}
    )
    assert r.status_code == 200, r.text
    more = [await send(client, alice, room, f"n{i}") for i in range(3)]
    body = await _sync(client, bob, since=token, filter=filter_id)
    joined = body["rooms"]["join"][room]
    assert _ids(joined["timeline"]["events"]) == more[-2:]
    assert joined["timeline"]["limited"] is True
    # the topic change fell in the gap: it comes as state
    assert [e["type"] for e in joined["state"]["events"]] == ["m.room.topic"]


async def test_type_and_sender_filters(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    carol = await register(client, "carol", reg_token)
    room = await _room(client, alice, bob, carol)
    token = (await _sync(client, bob))["next_batch"]
    await send(client, alice, room, "from alice")
    await send(client, carol, room, "from carol")
    r = await client.post(
        f"{API}/rooms/{room}/events/org.example.custom",
        headers=alice.headers,
        json={"txn_id": "c1", "content": {"x": 1}},
    )
    assert r.status_code == 200, r.text
    only_messages = json.dumps(
        {"room": {"timeline": {"types": ["m.room.*"], "not_senders": [carol.user_id]}}}
    )
    body = await _sync(client, bob, since=token, filter=only_messages)
    events = body["rooms"]["join"][room]["timeline"]["events"]
    assert _bodies(events) == ["from alice"]
    assert all(e["type"].startswith("m.room.") for e in events)
    only_custom = json.dumps({"room": {"timeline": {"types": ["org.example.custom"]}}})
    body = await _sync(client, bob, since=token, filter=only_custom)
    assert [e["type"] for e in body["rooms"]["join"][room]["timeline"]["events"]] == ["org.example.custom"]
    # rooms / not_rooms
    other = await _room(client, alice, bob)
    await send(client, alice, other, "elsewhere")
    body = await _sync(client, bob, since=token, filter=json.dumps({"room": {"not_rooms": [room]}}))
    assert room not in body["rooms"]["join"] and other in body["rooms"]["join"]
    body = await _sync(client, bob, since=token, filter=json.dumps({"room": {"rooms": [room]}}))
    assert set(body["rooms"]["join"]) == {room}
    # presence and account data switched off
    body = await _sync(
        client, bob, filter=json.dumps({"presence": {"limit": 0}, "account_data": {"types": []}})
    )
    assert body["presence"]["events"] == [] and body["account_data"]["events"] == []
    # event_fields
    body = await _sync(
        client,
        bob,
        since=token,
        filter=json.dumps({"event_fields": ["type", "content.body"], "room": {"rooms": [room]}}),
    )
    events = body["rooms"]["join"][room]["timeline"]["events"]
    assert {"type": "m.room.message", "content": {"body": "from alice"}} in events
    assert all(set(e) <= {"type", "content"} for e in events)


async def test_lazy_load_members(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    carol = await register(client, "carol", reg_token)
    dave = await register(client, "dave", reg_token)
    room = await _room(client, alice, bob, carol, dave)
    for i in range(3):
        await send(client, carol, room, f"c{i}")
    lazy = json.dumps({"room": {"timeline": {"limit": 3}, "state": {"lazy_load_members": True}}})
    body = await _sync(client, bob, filter=lazy)
    joined = body["rooms"]["join"][room]
    members = {e["state_key"] for e in joined["state"]["events"] if e["type"] == "m.room.member"}
    assert members == {carol.user_id, bob.user_id}
    assert "m.room.create" in {e["type"] for e in joined["state"]["events"]}
    # without lazy loading, everyone
    body = await _sync(client, bob, filter=json.dumps({"room": {"timeline": {"limit": 3}}}))
    members = {
        e["state_key"] for e in body["rooms"]["join"][room]["state"]["events"] if e["type"] == "m.room.member"
    }
    assert members == {alice.user_id, bob.user_id, carol.user_id, dave.user_id}
    # incremental: the sender's member event comes along
    token = body["next_batch"]
    await send(client, dave, room, "hi from dave")
    body = await _sync(client, bob, since=token, filter=lazy)
    state = body["rooms"]["join"][room]["state"]["events"]
    assert [(e["type"], e["state_key"]) for e in state] == [("m.room.member", dave.user_id)]


async def test_transaction_id_only_to_the_sending_device(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    room = await _room(client, alice, bob)
    token_a = (await _sync(client, alice))["next_batch"]
    token_b = (await _sync(client, bob))["next_batch"]
    second = Agent(alice.user_id, alice.key, alice.public_key)
    await login(client, second)  # alice's second device
    token_a2 = (await _sync(client, second))["next_batch"]
    r = await client.post(
        f"{API}/rooms/{room}/messages", headers=alice.headers, json={"txn_id": "my-txn-1", "body": "hi"}
    )
    assert r.status_code == 200, r.text
    event_id = r.json()["event_id"]

    async def event_for(agent: Agent, token: str) -> dict[str, Any]:
        body = await _sync(client, agent, since=token, timeout=5000)
        return next(e for e in body["rooms"]["join"][room]["timeline"]["events"] if e["event_id"] == event_id)

    assert (await event_for(alice, token_a))["unsigned"]["transaction_id"] == "my-txn-1"
    assert "transaction_id" not in (await event_for(second, token_a2)).get("unsigned", {})
    assert "transaction_id" not in (await event_for(bob, token_b)).get("unsigned", {})
    # and in an initial sync
    body = await _sync(client, alice)
    mine = next(e for e in body["rooms"]["join"][room]["timeline"]["events"] if e["event_id"] == event_id)
    assert mine["unsigned"]["transaction_id"] == "my-txn-1"


async def test_full_state(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    room = await _room(client, alice, bob)
    quiet = await _room(client, alice, bob, name="quiet")
    token = (await _sync(client, bob))["next_batch"]
    event_id = await send(client, alice, room, "new")
    body = await _sync(client, bob, since=token, full_state="true", timeout=10000)
    assert set(body["rooms"]["join"]) == {room, quiet}
    for room_id in (room, quiet):
        types = {e["type"] for e in body["rooms"]["join"][room_id]["state"]["events"]}
        assert {"m.room.create", "m.room.member", "m.room.power_levels"} <= types
    assert _ids(body["rooms"]["join"][room]["timeline"]["events"]) == [event_id]
    assert body["rooms"]["join"][quiet]["timeline"]["events"] == []


async def test_bad_sync_parameters(client, reg_token):
    bob = await register(client, "bob", reg_token)
    token = (await _sync(client, bob))["next_batch"]
    position, ephemeral, instance, acct = token[1:].split("_")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"since": "garbage"}, "M_INVALID_PARAM"),
        ({"since": f"s{position}_{int(ephemeral) + 1000}_{instance}_{acct}"}, "M_INVALID_PARAM"),
        ({"since": "s1"}, "M_INVALID_PARAM"),
        ({"since": f"s{int(position) + 1000}_{ephemeral}_{instance}_{acct}"}, "M_INVALID_PARAM"),
        ({"filter": "{not json"}, "M_BAD_JSON"),
        ({"filter": json.dumps({"room": {"timeline": {"limit": "x"}}})}, "M_BAD_JSON"),
        ({"filter": "[1]"}, "M_INVALID_PARAM"),
        ({"filter": "424242"}, "M_INVALID_PARAM"),
        ({"timeout": "soon"}, "M_INVALID_PARAM"),
        ({"full_state": "maybe"}, "M_INVALID_PARAM"),
        ({"set_presence": "dancing"}, "M_INVALID_PARAM"),
    ]
    for params, errcode in cases:
        r = await client.get(f"{MX}/sync", headers=bob.headers, params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["errcode"] == errcode, (params, r.text)
    r = await client.get(f"{MX}/sync")
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = await client.get(f"{MX}/sync", params={"access_token": bob.access_token, "timeout": "0"})
    assert r.status_code == 200


async def test_set_presence(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    await _room(client, alice, bob)
    await _sync(client, alice, set_presence="unavailable")
    r = await client.get(f"{API}/presence/{alice.user_id}", headers=bob.headers)
    assert r.json()["presence"] == "unavailable"
    body = await _sync(client, bob, set_presence="offline")
    presence = {e["sender"]: e["content"]["presence"] for e in body["presence"]["events"]}
    assert presence.get(alice.user_id) == "unavailable"
    assert bob.user_id not in presence  # offline: the sync did not mark bob online


async def test_old_token_reads_the_database(settings_for):
    """A token older than the feed's buffer: the same answer, read from the database."""
    from clawlist.app import create_app

    app = create_app(settings_for(feed_buffer_events=100), announce=lambda _text: None)
    async with app.router.lifespan_context(app):
        token = app.state.first_start.registration_token
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            alice = await register(client, "alice", token)
            bob = await register(client, "bob", token)
            carol = await register(client, "carol", token)
            room = await _room(client, alice, bob)
            gone = await _room(client, alice, bob)
            invited = (await client.post(f"{API}/rooms", headers=carol.headers, json={"name": "x"})).json()[
                "room_id"
            ]
            since = (await _sync(client, bob))["next_batch"]
            r = await client.put(
                f"{API}/rooms/{room}/state/m.room.topic",
                headers=alice.headers,
                json={"content": {"topic": "t"}},
            )
            assert r.status_code == 200
            await send(client, alice, gone, "last words")
            assert (await client.post(f"{API}/rooms/{gone}/leave", headers=bob.headers)).status_code == 200
            r = await client.post(
                f"{API}/rooms/{invited}/invite", headers=carol.headers, json={"user_id": bob.user_id}
            )
            assert r.status_code == 200
            sent = [await send(client, alice, room, f"m{i}") for i in range(150)]
            assert app.state.services.feed.after(int(since[1:].split("_")[0])) is None
            body = await _sync(
                client, bob, since=since, filter=json.dumps({"room": {"timeline": {"limit": 5}}})
            )
            joined = body["rooms"]["join"][room]
            assert _ids(joined["timeline"]["events"]) == sent[-5:]
            assert joined["timeline"]["limited"] is True
            assert [e["type"] for e in joined["state"]["events"]] == ["m.room.topic"]
            left = body["rooms"]["leave"][gone]["timeline"]["events"]
            assert _bodies(left) == ["last words"] and left[-1]["content"]["membership"] == "leave"
            assert invited in body["rooms"]["invite"]


async def test_token_from_another_process_resends_ephemeral_state(client, reg_token):
    """The ephemeral part of a token is per process: elsewhere the current typing and receipts of
    every joined room are sent once, then the process's own version takes over."""
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    room = await _room(client, alice, bob)
    event_id = await send(client, alice, room, "hi")
    r = await client.post(f"{API}/rooms/{room}/receipts", headers=alice.headers, json={"event_id": event_id})
    assert r.status_code == 200
    token = (await _sync(client, bob))["next_batch"]
    position, _ephemeral, _instance, acct = token[1:].split("_")
    body = await _sync(client, bob, since=f"s{position}_0_abc123_{acct}", timeout=0)
    eph = {e["type"]: e["content"] for e in body["rooms"]["join"][room]["ephemeral"]["events"]}
    assert eph["m.typing"] == {"user_ids": []}
    assert alice.user_id in eph["m.receipt"][event_id]["m.read"]
    assert body["rooms"]["join"][room]["timeline"]["events"] == []
    body = await _sync(client, bob, since=body["next_batch"], timeout=0)
    assert room not in body["rooms"]["join"]


async def test_include_leave_on_initial_sync(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    room = await _room(client, alice, bob)
    seen = await send(client, alice, room, "seen")
    assert (await client.post(f"{API}/rooms/{room}/leave", headers=bob.headers)).status_code == 200
    await send(client, alice, room, "unseen")
    declined = (await client.post(f"{API}/rooms", headers=alice.headers, json={"name": "d"})).json()[
        "room_id"
    ]
    await send(client, alice, declined, "never for bob")
    r = await client.post(
        f"{API}/rooms/{declined}/invite", headers=alice.headers, json={"user_id": bob.user_id}
    )
    assert r.status_code == 200
    assert (await client.post(f"{API}/rooms/{declined}/leave", headers=bob.headers)).status_code == 200
    body = await _sync(client, bob)
    assert body["rooms"]["leave"] == {}  # not without include_leave
    body = await _sync(client, bob, filter=json.dumps({"room": {"include_leave": True}}))
    left = body["rooms"]["leave"][room]
    events = left["timeline"]["events"]
    assert seen in _ids(events) and "unseen" not in _bodies(events)
    assert events[-1]["content"]["membership"] == "leave"
    rejected = body["rooms"]["leave"][declined]["timeline"]["events"]
    assert [(e["type"], e["content"]["membership"]) for e in rejected] == [("m.room.member", "leave")]
    assert body["rooms"]["leave"][declined]["state"]["events"] == []

    # a forgotten room is no longer in include_leave, until a new membership brings it back
    forget = await client.post(f"/_matrix/client/v3/rooms/{room}/forget", headers=bob.headers, json={})
    assert forget.status_code == 200, forget.text
    body = await _sync(client, bob, filter=json.dumps({"room": {"include_leave": True}}))
    assert room not in body["rooms"]["leave"] and declined in body["rooms"]["leave"]
    for step, who in (("invite", alice), ("leave", bob)):
        extra = {"user_id": bob.user_id} if step == "invite" else {}
        r = await client.post(f"{API}/rooms/{room}/{step}", headers=who.headers, json=extra)
        assert r.status_code == 200, r.text
    body = await _sync(client, bob, filter=json.dumps({"room": {"include_leave": True}}))
    assert room in body["rooms"]["leave"]
