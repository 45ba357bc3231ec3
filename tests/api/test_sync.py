"""Long-poll sync, typing, receipts and presence through the REST API."""

from __future__ import annotations

import asyncio

from tests.helpers import register, send

API = "/api/v1"


async def _room(client, alice, bob) -> str:
    r = await client.post(f"{API}/rooms", headers=alice.headers, json={"name": "s", "visibility": "public"})
    room = r.json()["room_id"]
    assert (await client.post(f"{API}/rooms/{room}/join", headers=bob.headers)).status_code == 200
    return str(room)


async def test_initial_then_incremental_sync(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    room = await _room(client, alice, bob)
    first_id = await send(client, alice, room, "before")
    r = await client.get(f"{API}/sync", headers=bob.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert first_id in [e["event_id"] for e in body["rooms"][room]["timeline"]]
    token = body["next_batch"]
    # nothing new: a zero-timeout sync answers at once with nothing
    r = await client.get(f"{API}/sync", headers=bob.headers, params={"since": token, "timeout": 0})
    assert r.json()["rooms"] == {}
    # a long-poll returns as soon as a message arrives
    poll = asyncio.create_task(
        client.get(f"{API}/sync", headers=bob.headers, params={"since": token, "timeout": 10000})
    )
    await asyncio.sleep(0.2)
    assert not poll.done()
    second_id = await send(client, alice, room, "after")
    r = await asyncio.wait_for(poll, 5)
    timeline = r.json()["rooms"][room]["timeline"]
    assert [e["event_id"] for e in timeline] == [second_id]
    assert timeline[0]["position"] > 0


async def test_sync_sees_only_visible_rooms_and_own_invites(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    carol = await register(client, "carol", reg_token)
    token = (await client.get(f"{API}/sync", headers=carol.headers)).json()["next_batch"]
    r = await client.post(f"{API}/rooms", headers=alice.headers, json={"name": "secret"})
    secret = r.json()["room_id"]
    await send(client, alice, secret, "private")
    r = await client.post(
        f"{API}/rooms/{secret}/invite", headers=alice.headers, json={"user_id": carol.user_id}
    )
    assert r.status_code == 200
    r = await client.get(f"{API}/sync", headers=carol.headers, params={"since": token, "timeout": 2000})
    body = r.json()
    bodies = [e["content"].get("body") for room in body["rooms"].values() for e in room["timeline"]]
    assert "private" not in bodies
    assert secret in body["invites"]
    del bob


async def test_typing_receipts_and_presence_reach_sync(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    room = await _room(client, alice, bob)
    event_id = await send(client, alice, room, "read me")
    token = (await client.get(f"{API}/sync", headers=bob.headers)).json()["next_batch"]
    r = await client.post(
        f"{API}/rooms/{room}/typing", headers=alice.headers, json={"typing": True, "timeout_ms": 5000}
    )
    assert r.status_code == 200, r.text
    r = await client.get(f"{API}/sync", headers=bob.headers, params={"since": token, "timeout": 5000})
    body = r.json()
    eph = {e["type"]: e["content"] for e in body["rooms"][room]["ephemeral"]}
    assert eph["m.typing"] == {"user_ids": [alice.user_id]}
    token = body["next_batch"]
    r = await client.post(f"{API}/rooms/{room}/receipts", headers=alice.headers, json={"event_id": event_id})
    assert r.status_code == 200, r.text
    r = await client.get(f"{API}/sync", headers=bob.headers, params={"since": token, "timeout": 5000})
    eph = {e["type"]: e["content"] for e in r.json()["rooms"][room]["ephemeral"]}
    assert alice.user_id in eph["m.receipt"][event_id]["m.read"]
    r = await client.put(
        f"{API}/presence", headers=alice.headers, json={"presence": "unavailable", "status_msg": "busy"}
    )
    assert r.status_code == 200
    r = await client.get(f"{API}/presence/{alice.user_id}", headers=bob.headers)
    assert r.json()["presence"] == "unavailable" and r.json()["status_msg"] == "busy"


async def test_bad_sync_tokens_are_400(client, reg_token):
    bob = await register(client, "bob", reg_token)
    for bad in ("nope", "s1", "s-1_0_ab", "s99999999999_0_ab"):
        r = await client.get(f"{API}/sync", headers=bob.headers, params={"since": bad})
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["errcode"] == "M_INVALID_PARAM"
    r = await client.post(f"{API}/rooms/!nope:test.local/typing", headers=bob.headers, json={"typing": True})
    assert r.status_code in (403, 404) and r.json()["errcode"]


async def test_presence_is_not_shared_through_large_rooms(settings_for):
    import httpx

    from clawlist.app import create_app
    from tests.helpers import register as reg

    settings = settings_for(presence_max_room_members=2)
    app = create_app(settings, announce=lambda _text: None)
    async with app.router.lifespan_context(app):
        token = app.state.first_start.registration_token
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            alice = await reg(client, "alice", token)
            bob = await reg(client, "bob", token)
            carol = await reg(client, "carol", token)
            big = (
                await client.post(f"{API}/rooms", headers=alice.headers, json={"visibility": "public"})
            ).json()
            for who in (bob, carol):
                assert (
                    await client.post(f"{API}/rooms/{big['room_id']}/join", headers=who.headers)
                ).status_code == 200
            token_b = (await client.get(f"{API}/sync", headers=bob.headers)).json()["next_batch"]
            r = await client.put(f"{API}/presence", headers=alice.headers, json={"presence": "unavailable"})
            assert r.status_code == 200
            body = (await client.get(f"{API}/sync", headers=bob.headers, params={"since": token_b})).json()
            assert alice.user_id not in [p["sender"] for p in body["presence"]]
            # in a small room (a DM) it is shared
            dm = (
                await client.post(f"{API}/dms", headers=alice.headers, json={"user_id": bob.user_id})
            ).json()
            assert (
                await client.post(f"{API}/rooms/{dm['room_id']}/join", headers=bob.headers)
            ).status_code == 200
            token_b = (await client.get(f"{API}/sync", headers=bob.headers)).json()["next_batch"]
            r = await client.put(f"{API}/presence", headers=alice.headers, json={"presence": "online"})
            body = (
                await client.get(
                    f"{API}/sync", headers=bob.headers, params={"since": token_b, "timeout": 3000}
                )
            ).json()
            assert alice.user_id in [p["sender"] for p in body["presence"]]
