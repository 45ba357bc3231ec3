from __future__ import annotations

from tests.helpers import register, send


async def test_two_agents_talk_in_a_room_and_a_dm(client, reg_token):
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    r = await client.post(
        "/api/v1/rooms", headers=alice.headers, json={"name": "deals", "visibility": "public"}
    )
    assert r.status_code == 201, r.text
    room = r.json()["room_id"]
    r = await client.post(f"/api/v1/rooms/{room}/join", headers=bob.headers)
    assert r.status_code == 200, r.text
    e1 = await send(client, alice, room, "hello bob")
    e2 = await send(client, bob, room, "hi alice")
    r = await client.get(
        f"/api/v1/rooms/{room}/messages", headers=bob.headers, params={"dir": "b", "limit": 2}
    )
    assert r.status_code == 200, r.text
    chunk = r.json()["chunk"]
    assert [e["event_id"] for e in chunk] == [e2, e1]
    r = await client.post("/api/v1/dms", headers=alice.headers, json={"user_id": bob.user_id})
    dm = r.json()["room_id"]
    r2 = await client.post("/api/v1/dms", headers=bob.headers, json={"user_id": alice.user_id})
    assert r2.json()["room_id"] == dm
    await send(client, bob, dm, "private hello")
