"""The Matrix façade's timeline: sending (idempotent), redaction, typing, receipts, read markers,
/event, /messages, /context, /relations, reports and the send rate limit. Every test runs on
SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from clawlist.actions import account_data
from clawlist.actions.actor import Actor
from clawlist.app import create_app
from clawlist.core.clock import FrozenClock
from clawlist.storage.tables import event_reports, receipts
from tests.api.test_matrix_rooms import SERVER, create, enc, err, mx, ok
from tests.helpers import Agent, login, register, send


@pytest.fixture
async def trio(client: httpx.AsyncClient, reg_token: str) -> tuple[Agent, Agent, Agent]:
    return (
        await register(client, "alice", reg_token),
        await register(client, "bob", reg_token),
        await register(client, "carol", reg_token),
    )


@pytest.fixture
async def room(client, trio) -> str:
    alice, bob, _ = trio
    room_id = await create(client, alice, visibility="public", name="timeline")
    ok(await mx(client, bob, "POST", f"/join/{enc(room_id)}"))
    return room_id


async def msend(client, agent: Agent, room: str, body: str, txn: str, **extra: Any) -> str:
    content = {"msgtype": "m.text", "body": body, **extra}
    r = await mx(client, agent, "PUT", f"/rooms/{enc(room)}/send/m.room.message/{enc(txn)}", content)
    return str(ok(r)["event_id"])


def matrix_actor(agent: Agent) -> Actor:
    return Actor(principal_id=agent.user_id, kind="agent", session_id="test")


# ---------------------------------------------------------------------------------------------
# sending


async def test_send_is_idempotent_per_session_and_txn(client, trio, room):
    alice, bob, _ = trio
    first = await msend(client, alice, room, "hello", "txn-1")
    assert first.startswith("$")
    assert await msend(client, alice, room, "hello again?", "txn-1") == first  # the first answer
    assert await msend(client, alice, room, "second", "txn-2") != first
    # the same txn id from another session (device) is another send
    other = Agent(alice.user_id, alice.key, alice.public_key)
    await login(client, other)
    assert await msend(client, other, room, "hello", "txn-1") != first
    # transaction_id only for the sending session
    mine = ok(await mx(client, alice, "GET", f"/rooms/{enc(room)}/event/{enc(first)}"))
    assert mine["unsigned"]["transaction_id"] == "txn-1"
    assert "position" not in mine
    theirs = ok(await mx(client, bob, "GET", f"/rooms/{enc(room)}/event/{enc(first)}"))
    assert "transaction_id" not in theirs.get("unsigned", {})
    assert theirs["content"] == {"msgtype": "m.text", "body": "hello"}
    # any event type; any custom msgtype; but a market msgtype of ours only where it belongs
    r = ok(await mx(client, alice, "PUT", f"/rooms/{enc(room)}/send/x.custom.event/t3", {"anything": [1, 2]}))
    assert r["event_id"].startswith("$")
    await msend(client, alice, room, "a card", "t4", msgtype="m.text", price=5)
    listing = {"msgtype": "clawlist.listing", "body": "a listing", "price": 5}
    err(
        await mx(client, alice, "PUT", f"/rooms/{enc(room)}/send/m.room.message/t5", listing),
        400,
        "CL_NOT_A_MARKET_ROOM",
    )


async def test_send_bad_input(client, trio, room, app_env):
    alice, _, carol = trio
    path = f"/rooms/{enc(room)}/send/m.room.message"
    err(await mx(client, alice, "PUT", f"{path}/b1", b"{nope"), 400, "M_NOT_JSON")
    err(await mx(client, alice, "PUT", f"{path}/b2", b"[]"), 400, "M_BAD_JSON")
    err(await mx(client, alice, "PUT", f"{path}/b3", {"body": "no msgtype"}), 400, "M_BAD_JSON")
    err(await mx(client, alice, "PUT", f"{path}/b4", {"msgtype": "m.text", "body": 5}), 400, "M_BAD_JSON")
    big = "x" * (app_env["settings"].max_event_bytes + 10)
    err(await mx(client, alice, "PUT", f"{path}/b5", {"msgtype": "m.text", "body": big}), 413, "M_TOO_LARGE")
    err(await mx(client, carol, "PUT", f"{path}/b6", {"msgtype": "m.text", "body": "x"}), 403, "M_FORBIDDEN")
    ghost = f"/rooms/{enc('!ghost:' + SERVER)}/send/m.room.message/b7"
    err(await mx(client, alice, "PUT", ghost, {"msgtype": "m.text", "body": "x"}), 404, "M_NOT_FOUND")
    err(await mx(client, alice, "PUT", f"/rooms/{enc(room)}/send/m.room.redaction/b8", {}), 400)
    err(
        await mx(client, None, "PUT", f"{path}/b9", {"msgtype": "m.text", "body": "x"}),
        401,
        "M_MISSING_TOKEN",
    )
    r = await client.put(
        f"/_matrix/client/v3/rooms/{enc(room)}/send/m.room.message/b10",
        params={"access_token": "bogus"},
        json={"msgtype": "m.text", "body": "x"},
    )
    err(r, 401, "M_UNKNOWN_TOKEN")
    # the deprecated access_token query parameter works
    r = await client.put(
        f"/_matrix/client/v3/rooms/{enc(room)}/send/m.room.message/b11",
        params={"access_token": alice.access_token},
        json={"msgtype": "m.text", "body": "x"},
    )
    assert r.status_code == 200, r.text


async def test_redact(client, trio, room):
    alice, bob, carol = trio
    target = await msend(client, bob, room, "secret", "r1")
    path = f"/rooms/{enc(room)}/redact/{enc(target)}"
    redaction = ok(await mx(client, bob, "PUT", f"{path}/rt1", {"reason": "oops"}))["event_id"]
    assert ok(await mx(client, bob, "PUT", f"{path}/rt1", {"reason": "oops"}))["event_id"] == redaction
    e = ok(await mx(client, alice, "GET", f"/rooms/{enc(room)}/event/{enc(target)}"))
    assert e["content"] == {}
    because = e["unsigned"]["redacted_because"]
    assert because["event_id"] == redaction and because["sender"] == bob.user_id
    assert because["content"]["reason"] == "oops" and because["type"] == "m.room.redaction"
    red = ok(await mx(client, alice, "GET", f"/rooms/{enc(room)}/event/{enc(redaction)}"))
    assert red["redacts"] == target
    # others' events need the redact power level; unknown events; outsiders
    mine = await msend(client, alice, room, "alice's", "r2")
    err(await mx(client, bob, "PUT", f"/rooms/{enc(room)}/redact/{enc(mine)}/rt2", {}), 403, "M_FORBIDDEN")
    err(await mx(client, bob, "PUT", f"/rooms/{enc(room)}/redact/{enc('$nope')}/rt3", {}), 404, "M_NOT_FOUND")
    err(await mx(client, carol, "PUT", f"/rooms/{enc(room)}/redact/{enc(mine)}/rt4", {}), 403, "M_FORBIDDEN")
    err(
        await mx(client, alice, "PUT", f"/rooms/{enc(room)}/redact/{enc(mine)}/rt5", {"reason": 5}),
        400,
        "M_BAD_JSON",
    )
    ok(await mx(client, alice, "PUT", f"/rooms/{enc(room)}/redact/{enc(mine)}/rt6"))  # no body at all


async def test_typing(client, trio, room, app_env):
    alice, bob, carol = trio
    path = f"/rooms/{enc(room)}/typing"
    assert (
        ok(await mx(client, alice, "PUT", f"{path}/{enc(alice.user_id)}", {"typing": True, "timeout": 30000}))
        == {}
    )
    hub = app_env["services"].ephemeral
    assert hub.typing_in(room) == [alice.user_id]
    # a very long timeout is clamped, not refused
    ok(await mx(client, alice, "PUT", f"{path}/{enc(alice.user_id)}", {"typing": True, "timeout": 10**9}))
    ok(await mx(client, alice, "PUT", f"{path}/{enc(alice.user_id)}", {"typing": False}))
    assert hub.typing_in(room) == []
    err(await mx(client, alice, "PUT", f"{path}/{enc(bob.user_id)}", {"typing": True}), 403, "M_FORBIDDEN")
    err(await mx(client, alice, "PUT", f"{path}/{enc(alice.user_id)}", {}), 400, "M_MISSING_PARAM")
    err(await mx(client, alice, "PUT", f"{path}/{enc(alice.user_id)}", {"typing": "yes"}), 400, "M_BAD_JSON")
    err(await mx(client, alice, "PUT", f"{path}/{enc(alice.user_id)}", {"typing": True, "timeout": "x"}), 400)
    err(await mx(client, alice, "PUT", f"{path}/{enc(alice.user_id)}", b""), 400, "M_NOT_JSON")
    err(await mx(client, carol, "PUT", f"{path}/{enc(carol.user_id)}", {"typing": True}), 403, "M_FORBIDDEN")


async def test_receipts_and_read_markers(client, trio, room, app_env):
    alice, bob, carol = trio
    svc = app_env["services"]
    e1 = await msend(client, alice, room, "one", "rr1")
    e2 = await msend(client, alice, room, "two", "rr2")
    path = f"/rooms/{enc(room)}"
    assert ok(await mx(client, bob, "POST", f"{path}/receipt/m.read/{enc(e1)}", {})) == {}
    ok(await mx(client, bob, "POST", f"{path}/receipt/m.read/{enc(e2)}", {"thread_id": "main"}))
    ok(await mx(client, bob, "POST", f"{path}/receipt/m.read.private/{enc(e1)}"))
    async with svc.db.read() as conn:
        rows = (await conn.execute(select(receipts).where(receipts.c.user_id == bob.user_id))).all()
    assert {(r.receipt_type, r.event_id) for r in rows} == {("m.read", e2), ("m.read.private", e1)}
    # m.fully_read through /receipt goes to the room's account data
    ok(await mx(client, bob, "POST", f"{path}/receipt/m.fully_read/{enc(e1)}", {}))
    actor = matrix_actor(bob)
    assert await account_data.get(svc, actor, bob.user_id, "m.fully_read", room) == {"event_id": e1}
    # read markers: all three at once
    body = {"m.fully_read": e2, "m.read": e2, "m.read.private": e2}
    assert ok(await mx(client, bob, "POST", f"{path}/read_markers", body)) == {}
    assert await account_data.get(svc, actor, bob.user_id, "m.fully_read", room) == {"event_id": e2}
    async with svc.db.read() as conn:
        rows = (await conn.execute(select(receipts).where(receipts.c.user_id == bob.user_id))).all()
    assert {(r.receipt_type, r.event_id) for r in rows} == {("m.read", e2), ("m.read.private", e2)}
    # bad input
    err(await mx(client, bob, "POST", f"{path}/receipt/m.nonsense/{enc(e1)}", {}), 400)
    err(await mx(client, bob, "POST", f"{path}/receipt/m.read/{enc('$nope')}", {}), 404, "M_NOT_FOUND")
    err(
        await mx(client, bob, "POST", f"{path}/receipt/m.read/{enc(e1)}", {"thread_id": 5}), 400, "M_BAD_JSON"
    )
    err(await mx(client, bob, "POST", f"{path}/receipt/m.read/{enc(e1)}", b"{x"), 400, "M_NOT_JSON")
    err(await mx(client, carol, "POST", f"{path}/receipt/m.read/{enc(e1)}", {}), 403, "M_FORBIDDEN")
    err(await mx(client, bob, "POST", f"{path}/read_markers", {"m.fully_read": 5}), 400, "M_BAD_JSON")
    err(await mx(client, bob, "POST", f"{path}/read_markers", {"m.fully_read": "$nope"}), 404, "M_NOT_FOUND")
    err(await mx(client, carol, "POST", f"{path}/read_markers", {"m.read": e1}), 403, "M_FORBIDDEN")


# ---------------------------------------------------------------------------------------------
# reading


async def test_get_event(client, trio, room):
    alice, _, carol = trio
    e = await msend(client, alice, room, "hi", "ge1")
    found = ok(await mx(client, alice, "GET", f"/rooms/{enc(room)}/event/{enc(e)}"))
    assert {"event_id", "type", "sender", "room_id", "origin_server_ts", "content"} <= set(found)
    err(await mx(client, alice, "GET", f"/rooms/{enc(room)}/event/{enc('$nope')}"), 404, "M_NOT_FOUND")
    other = await create(client, alice)
    err(await mx(client, alice, "GET", f"/rooms/{enc(other)}/event/{enc(e)}"), 404, "M_NOT_FOUND")
    private = await create(client, alice)
    secret = await msend(client, alice, private, "secret", "ge2")
    err(await mx(client, carol, "GET", f"/rooms/{enc(private)}/event/{enc(secret)}"), 403, "M_FORBIDDEN")


async def _page_all(client, agent, room, direction, limit, **params) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    token = params.pop("from", None)
    for _ in range(500):
        query = {"dir": direction, "limit": limit, **params}
        if token is not None:
            query["from"] = token
        page = ok(await mx(client, agent, "GET", f"/rooms/{enc(room)}/messages", **query))
        assert "start" in page
        seen += page["chunk"]
        token = page.get("end")
        if token is None:
            return seen
    raise AssertionError("pagination did not terminate")


async def test_messages_pagination(client, trio, room):
    alice, bob, _ = trio
    sent = [await msend(client, alice if i % 2 else bob, room, f"m{i}", f"p{i}") for i in range(25)]
    for limit in (1, 4, 10, 100):
        backwards = await _page_all(client, alice, room, "b", limit)
        forwards = await _page_all(client, alice, room, "f", limit)
        b_ids = [e["event_id"] for e in backwards]
        assert b_ids == list(reversed([e["event_id"] for e in forwards])), limit
        assert len(set(b_ids)) == len(b_ids)
        assert [e["event_id"] for e in forwards if e["type"] == "m.room.message"] == sent
        assert forwards[0]["type"] == "m.room.create"
        assert all("position" not in e for e in forwards)
    # the default: backwards from the newest, 10 events; the end is absent at the start of the room
    page = ok(await mx(client, alice, "GET", f"/rooms/{enc(room)}/messages"))
    assert [e["event_id"] for e in page["chunk"]] == list(reversed(sent[-10:]))
    start_of_room = ok(await mx(client, alice, "GET", f"/rooms/{enc(room)}/messages", dir="b", limit=1000))
    assert "end" not in start_of_room
    # `to` stops the page
    first = ok(await mx(client, alice, "GET", f"/rooms/{enc(room)}/messages", dir="b", limit=5))
    rest = ok(
        await mx(client, alice, "GET", f"/rooms/{enc(room)}/messages", dir="f", limit=100, to=first["end"])
    )
    assert rest["chunk"][-1]["event_id"] == sent[-6]
    assert "end" not in rest


async def test_messages_accepts_sync_tokens(client, trio, room):
    alice, bob, _ = trio
    before = [await msend(client, alice, room, f"old{i}", f"s{i}") for i in range(3)]
    token = (await client.get("/api/v1/sync", headers=bob.headers)).json()["next_batch"]
    after = [await msend(client, alice, room, f"new{i}", f"n{i}") for i in range(3)]
    back = ok(
        await mx(client, bob, "GET", f"/rooms/{enc(room)}/messages", dir="b", limit=3, **{"from": token})
    )
    assert [e["event_id"] for e in back["chunk"]] == list(reversed(before))
    assert back["start"] == token
    fwd = ok(
        await mx(client, bob, "GET", f"/rooms/{enc(room)}/messages", dir="f", limit=10, **{"from": token})
    )
    assert [e["event_id"] for e in fwd["chunk"]] == after
    # a gap between a sync token and a later page: `to` as a sync token
    newest = ok(await mx(client, bob, "GET", f"/rooms/{enc(room)}/messages", dir="b", limit=100, to=token))
    assert [e["event_id"] for e in newest["chunk"]] == list(reversed(after))
    assert "end" not in newest


async def test_messages_filters(client, trio, room):
    alice, bob, carol = trio
    a = await msend(client, alice, room, "from alice", "f1")
    b = await msend(client, bob, room, "from bob", "f2")
    img = await msend(client, bob, room, "a picture", "f3", msgtype="m.image", url="mxc://test.local/abc")
    custom = ok(await mx(client, alice, "PUT", f"/rooms/{enc(room)}/send/x.other/f4", {"k": 1}))["event_id"]

    async def ids(filt: dict[str, Any], **params: Any) -> list[str]:
        query = {"dir": "f", "limit": 100, "filter": orjson.dumps(filt).decode(), **params}
        query = {k: v for k, v in query.items() if v is not None}
        page = ok(await mx(client, alice, "GET", f"/rooms/{enc(room)}/messages", **query))
        return [e["event_id"] for e in page["chunk"]]

    assert await ids({"types": ["m.room.message"]}) == [a, b, img]
    assert await ids({"types": ["m.room.mess*"]}) == [a, b, img]
    assert await ids({"types": ["x.*"]}) == [custom]
    assert custom not in await ids({"not_types": ["x.*"]})
    assert await ids({"types": ["m.room.message"], "senders": [bob.user_id]}) == [b, img]
    assert await ids({"types": ["m.room.message"], "not_senders": [bob.user_id]}) == [a]
    assert await ids({"contains_url": True}) == [img]
    assert await ids({"types": ["m.room.message"], "contains_url": False}) == [a, b]
    assert await ids({"types": ["nothing.like_this%"]}) == []  # LIKE wildcards are literal
    # the filter's limit
    assert len(await ids({"types": ["m.room.message"], "limit": 2}, limit=None)) == 2
    # lazy-loaded members: the senders' member events in `state`
    query = {
        "dir": "b",
        "limit": 2,
        "filter": orjson.dumps({"lazy_load_members": True, "types": ["m.room.message"]}).decode(),
    }
    page = ok(await mx(client, alice, "GET", f"/rooms/{enc(room)}/messages", **query))
    assert {e["state_key"] for e in page["state"]} == {bob.user_id}
    assert all(e["type"] == "m.room.member" for e in page["state"])
    # bad input
    path = f"/rooms/{enc(room)}/messages"
    err(await mx(client, alice, "GET", path, filter="{nope"), 400, "M_NOT_JSON")
    err(await mx(client, alice, "GET", path, filter="[1]"), 400, "M_BAD_JSON")
    err(await mx(client, alice, "GET", path, filter='{"types": "m.room.message"}'), 400, "M_BAD_JSON")
    err(await mx(client, alice, "GET", path, dir="x"), 400)
    err(await mx(client, alice, "GET", path, limit=0), 400)
    err(await mx(client, alice, "GET", path, limit="ten"), 400)
    err(await mx(client, alice, "GET", path, **{"from": "garbage"}), 400)
    err(await mx(client, alice, "GET", path, **{"from": "s12x"}), 400)
    err(
        await mx(client, carol, "GET", f"/rooms/{enc(await create(client, alice))}/messages"),
        403,
        "M_FORBIDDEN",
    )
    err(await mx(client, alice, "GET", f"/rooms/{enc('!ghost:' + SERVER)}/messages"), 404, "M_NOT_FOUND")


async def test_context(client, trio, room):
    alice, _, _ = trio
    sent = [await msend(client, alice, room, f"c{i}", f"c{i}") for i in range(9)]
    middle = sent[4]
    ctx = ok(await mx(client, alice, "GET", f"/rooms/{enc(room)}/context/{enc(middle)}", limit=4))
    assert ctx["event"]["event_id"] == middle
    assert [e["event_id"] for e in ctx["events_before"]] == [sent[3], sent[2]]
    assert [e["event_id"] for e in ctx["events_after"]] == [sent[5], sent[6]]
    state_types = {e["type"] for e in ctx["state"]}
    assert {"m.room.create", "m.room.power_levels", "m.room.member"} <= state_types
    # start pages backwards from before events_before, end forwards after events_after
    back = ok(
        await mx(
            client, alice, "GET", f"/rooms/{enc(room)}/messages", dir="b", limit=2, **{"from": ctx["start"]}
        )
    )
    assert [e["event_id"] for e in back["chunk"]] == [sent[1], sent[0]]
    fwd = ok(
        await mx(
            client, alice, "GET", f"/rooms/{enc(room)}/messages", dir="f", limit=2, **{"from": ctx["end"]}
        )
    )
    assert [e["event_id"] for e in fwd["chunk"]] == [sent[7], sent[8]]
    # lazy members
    lazy = orjson.dumps({"lazy_load_members": True}).decode()
    ctx = ok(
        await mx(client, alice, "GET", f"/rooms/{enc(room)}/context/{enc(middle)}", limit=2, filter=lazy)
    )
    assert [e["state_key"] for e in ctx["state"]] == [alice.user_id]
    ctx = ok(await mx(client, alice, "GET", f"/rooms/{enc(room)}/context/{enc(middle)}", limit=0))
    assert ctx["events_before"] == [] and ctx["events_after"] == []
    err(await mx(client, alice, "GET", f"/rooms/{enc(room)}/context/{enc('$nope')}"), 404, "M_NOT_FOUND")
    err(await mx(client, alice, "GET", f"/rooms/{enc(room)}/context/{enc(middle)}", limit=-1), 400)
    err(
        await mx(client, alice, "GET", f"/rooms/{enc(room)}/context/{enc(middle)}", filter="{"),
        400,
        "M_NOT_JSON",
    )


async def test_relations(client, trio, room):
    alice, bob, carol = trio
    parent = await msend(client, alice, room, "parent", "rel0")
    path = f"/rooms/{enc(room)}/send"
    reactions = []
    for i, key in enumerate(("👍", "🎉", "🚀")):
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": parent, "key": key}}
        reactions.append(ok(await mx(client, bob, "PUT", f"{path}/m.reaction/rx{i}", content))["event_id"])
    edit = await msend(
        client,
        alice,
        room,
        "* parent!",
        "edit1",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "parent!"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": parent},
        },
    )
    thread = await msend(
        client,
        bob,
        room,
        "in a thread",
        "th1",
        **{"m.relates_to": {"rel_type": "m.thread", "event_id": parent}},
    )
    reply = await msend(
        client, bob, room, "a reply", "rp1", **{"m.relates_to": {"m.in_reply_to": {"event_id": parent}}}
    )
    v1 = f"/_matrix/client/v1/rooms/{enc(room)}/relations/{enc(parent)}"

    async def rel(suffix: str = "", **params: Any) -> dict[str, Any]:
        r = await client.get(v1 + suffix, headers=alice.headers, params=params or None)
        assert r.status_code == 200, r.text
        return dict(r.json())

    everything = await rel()
    ids = [e["event_id"] for e in everything["chunk"]]
    assert ids == [thread, edit, *reversed(reactions)]  # newest first; the reply is not a relation
    assert reply not in ids
    assert [e["event_id"] for e in (await rel("/m.annotation"))["chunk"]] == list(reversed(reactions))
    assert [e["event_id"] for e in (await rel("/m.annotation/m.reaction"))["chunk"]] == list(
        reversed(reactions)
    )
    assert (await rel("/m.annotation/m.room.message"))["chunk"] == []
    assert [e["event_id"] for e in (await rel("/m.thread", dir="f"))["chunk"]] == [thread]
    # pagination
    first = await rel("/m.annotation", limit=2)
    assert [e["event_id"] for e in first["chunk"]] == [reactions[2], reactions[1]]
    rest = await rel("/m.annotation", limit=2, **{"from": first["next_batch"]})
    assert [e["event_id"] for e in rest["chunk"]] == [reactions[0]]
    assert "next_batch" not in rest and rest["prev_batch"] == first["next_batch"]
    # a redacted reaction is no longer a relation
    ok(await mx(client, bob, "PUT", f"/rooms/{enc(room)}/redact/{enc(reactions[0])}/rd1", {}))
    assert reactions[0] not in [e["event_id"] for e in (await rel("/m.annotation"))["chunk"]]
    # errors
    r = await client.get(
        f"/_matrix/client/v1/rooms/{enc(room)}/relations/{enc('$nope')}", headers=alice.headers
    )
    err(r, 404, "M_NOT_FOUND")
    private = await create(client, alice)
    secret = await msend(client, alice, private, "x", "sec1")
    r = await client.get(
        f"/_matrix/client/v1/rooms/{enc(private)}/relations/{enc(secret)}", headers=carol.headers
    )
    err(r, 403, "M_FORBIDDEN")
    err(await client.get(v1, headers=alice.headers, params={"dir": "up"}), 400)
    err(await client.get(v1, headers=alice.headers, params={"from": "junk"}), 400)
    err(await client.get(v1, headers=alice.headers, params={"limit": 0}), 400)


# ---------------------------------------------------------------------------------------------
# reports


async def test_report(client, trio, room, app_env):
    alice, bob, carol = trio
    target = await msend(client, bob, room, "spam spam", "rep1")
    path = f"/rooms/{enc(room)}/report/{enc(target)}"
    assert ok(await mx(client, alice, "POST", path, {"reason": "spam", "score": -100})) == {}
    assert ok(await mx(client, alice, "POST", path, {"reason": "still spam"})) == {}  # recorded once
    assert ok(await mx(client, alice, "POST", path)) == {}
    async with app_env["services"].db.read() as conn:
        rows = (await conn.execute(select(event_reports))).all()
    assert [(r.room_id, r.event_id, r.reporter, r.reason, r.score) for r in rows] == [
        (room, target, alice.user_id, "spam", -100)
    ]
    err(await mx(client, carol, "POST", path, {"reason": "x"}), 404, "M_NOT_FOUND")  # not in the room
    err(await mx(client, alice, "POST", f"/rooms/{enc(room)}/report/{enc('$nope')}", {}), 404, "M_NOT_FOUND")
    err(await mx(client, alice, "POST", path, {"score": 5}), 400)
    err(await mx(client, alice, "POST", path, {"score": "bad"}), 400, "M_BAD_JSON")
    err(await mx(client, alice, "POST", path, {"reason": 7}), 400, "M_BAD_JSON")
    err(await mx(client, alice, "POST", path, b"{"), 400, "M_NOT_JSON")


# ---------------------------------------------------------------------------------------------
# rate limit


async def test_send_rate_limit(settings_for):
    clock = FrozenClock()
    app = create_app(
        settings_for(send_rate_per_second=1.0, send_rate_burst=3), clock=clock, announce=lambda _t: None
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            alice = await register(client, "alice", app.state.first_start.registration_token)
            bob = await register(client, "bob", app.state.first_start.registration_token)
            room = await create(client, alice, visibility="public")
            ok(await mx(client, bob, "POST", f"/join/{enc(room)}"))
            first = await msend(client, alice, room, "1", "rl1")
            await send(client, alice, room, "2 (native)")  # REST and Matrix share the bucket
            await msend(client, alice, room, "3", "rl3")
            r = await mx(
                client,
                alice,
                "PUT",
                f"/rooms/{enc(room)}/send/m.room.message/rl4",
                {"msgtype": "m.text", "body": "4"},
            )
            err(r, 429, "M_LIMIT_EXCEEDED")
            assert 0 < r.json()["retry_after_ms"] <= 1000
            r = await client.post(
                f"/api/v1/rooms/{room}/messages", headers=alice.headers, json={"txn_id": "n5", "body": "5"}
            )
            err(r, 429, "M_LIMIT_EXCEEDED")
            # a retransmission of a send that succeeded is still answered
            assert await msend(client, alice, room, "1", "rl1") == first
            # another agent has its own bucket
            await msend(client, bob, room, "bob", "rlb")
            clock.advance(1.0)
            await msend(client, alice, room, "4", "rl4")
            err(
                await mx(
                    client,
                    alice,
                    "PUT",
                    f"/rooms/{enc(room)}/send/m.room.message/rl6",
                    {"msgtype": "m.text", "body": "6"},
                ),
                429,
            )


async def test_odd_path_segments_and_params_are_4xx(client, trio, room):
    """NUL bytes, overlong and malformed ids anywhere in the path or query: a 4xx, never a 500."""
    alice, _, _ = trio
    e = await msend(client, alice, room, "x", "odd0")
    r = enc(room)
    nul = "%00"
    calls: list[tuple[str, str, Any, dict[str, Any]]] = [
        ("GET", f"/rooms/{nul}/messages", None, {}),
        ("GET", f"/rooms/!a{nul}b:{SERVER}/state", None, {}),
        ("GET", f"/rooms/{r}/state/m.room{nul}/", None, {}),
        ("GET", f"/rooms/{r}/state/m.room.member/{nul}", None, {}),
        ("PUT", f"/rooms/{r}/state/x.y/{nul}", {"a": 1}, {}),
        ("GET", f"/rooms/{r}/event/{nul}", None, {}),
        ("GET", f"/rooms/{r}/event/{'x' * 2000}", None, {}),
        ("PUT", f"/rooms/{r}/send/m.room.message/{nul}", {"msgtype": "m.text", "body": "x"}, {}),
        ("PUT", f"/rooms/{r}/send/{nul}/t", {}, {}),
        ("PUT", f"/rooms/{r}/send/m.room.message/{'t' * 300}", {"msgtype": "m.text", "body": "x"}, {}),
        ("PUT", f"/rooms/{r}/redact/{nul}/t", {}, {}),
        ("POST", f"/rooms/{r}/receipt/m.read/{nul}", {}, {}),
        ("POST", f"/rooms/{r}/receipt/{nul}/{enc(e)}", {}, {}),
        ("POST", f"/rooms/{r}/report/{nul}", {}, {}),
        ("POST", f"/rooms/{r}/report/{enc(e)}", {"reason": "a\u0000b"}, {}),
        ("POST", f"/rooms/{r}/invite", {"user_id": "@a\u0000:x"}, {}),
        ("POST", f"/join/{nul}", {}, {}),
        ("POST", f"/join/%23a{nul}:{SERVER}", {}, {}),
        ("GET", f"/directory/room/%23{nul}:{SERVER}", None, {}),
        ("PUT", f"/directory/room/%23ok:{SERVER}", {"room_id": "!a\u0000:b"}, {}),
        ("DELETE", f"/directory/room/%23{nul}:{SERVER}", None, {}),
        ("GET", f"/directory/list/room/!{nul}:{SERVER}", None, {}),
        ("GET", f"/rooms/{r}/members", None, {"membership": "jo\u0000in"}),
        ("GET", f"/rooms/{r}/members", None, {"at": "p\u0000"}),
        ("GET", f"/rooms/{r}/messages", None, {"from": "p" + "9" * 40}),
        ("GET", f"/rooms/{r}/messages", None, {"from": "s" + "9" * 40 + "_1_a"}),
        ("GET", f"/rooms/{r}/messages", None, {"filter": '{"types": ["a\u0000"]}'}),
        ("GET", "/publicRooms", None, {"since": "d" + "9" * 40}),
        (
            "PUT",
            f"/rooms/{r}/state/m.room.member/{enc(alice.user_id)}",
            {"membership": "join", "displayname": "a\u0000"},
            {},
        ),
    ]
    for method, path, body, params in calls:
        resp = await mx(client, alice, method, path, body, **params)
        assert 400 <= resp.status_code < 500, (method, path, params, resp.status_code, resp.text)
        assert "errcode" in resp.json(), resp.text
    # a huge limit is clamped, not refused
    resp = await mx(client, alice, "GET", f"/rooms/{r}/messages", limit=10**30)
    assert resp.status_code == 200, resp.text
    # relations with odd segments
    v1 = f"/_matrix/client/v1/rooms/{r}/relations/{enc(e)}"
    for suffix in (f"/{nul}", f"/m.annotation/{nul}"):
        resp = await client.get(v1 + suffix, headers=alice.headers)
        assert 400 <= resp.status_code < 500, (suffix, resp.text)
