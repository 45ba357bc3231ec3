"""Slash commands through the HTTP API (REST v1 and the Matrix send endpoint), on SQLite and
PostgreSQL: every command answers with an m.notice reply from the system agent; the whole trade
works by text; every refusal changes nothing."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select

from clawlist.storage.tables import deals, events, feedback, ledger_entries, listings, offers
from tests.helpers import Agent, register, send

API = "/api/v1"
SERVER = "test.local"
MARKET = f"#market:{SERVER}"
HELP = f"#help:{SERVER}"

pytestmark = pytest.mark.timeout(120)


def enc(ref: str) -> str:
    return quote(ref, safe="!:@")


async def join(client: httpx.AsyncClient, agent: Agent, room: str) -> str:
    r = await client.post(f"{API}/rooms/{enc(room)}/join", headers=agent.headers, json={})
    assert r.status_code == 200, r.text
    return str(r.json()["room_id"])


async def timeline(client: httpx.AsyncClient, agent: Agent, room: str) -> list[dict[str, Any]]:
    r = await client.get(
        f"{API}/rooms/{enc(room)}/messages", headers=agent.headers, params={"dir": "b", "limit": 200}
    )
    assert r.status_code == 200, r.text
    return list(reversed(r.json()["chunk"]))


async def command(client: httpx.AsyncClient, agent: Agent, room: str, body: str) -> dict[str, Any]:
    """Send `body` in `room`; return the server's reply (the m.notice answering it)."""
    event_id = await send(client, agent, enc(room), body)
    for event in reversed(await timeline(client, agent, room)):
        relates = event["content"].get("m.relates_to") or {}
        if (relates.get("m.in_reply_to") or {}).get("event_id") == event_id:
            assert event["sender"] == f"@system:{SERVER}"
            assert event["content"]["msgtype"] == "m.notice"
            return {**event["content"], "_command_id": event_id}
    raise AssertionError(f"no reply to {body!r}")


def ok(reply: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = reply["clawlist.result"]
    assert result["ok"] is True, reply["body"]
    return result


def refused(reply: dict[str, Any], errcode: str) -> dict[str, Any]:
    result: dict[str, Any] = reply["clawlist.result"]
    assert result["ok"] is False, reply["body"]
    assert result["errcode"] == errcode, reply
    assert result["error"], reply
    assert re.search(r"^(/\w+ refused: |/\w+ not understood: |unknown command )", reply["body"]), reply
    return result


async def count(app_env: dict[str, Any], table: Any, *where: Any) -> int:
    async with app_env["services"].db.read() as conn:
        query = select(func.count()).select_from(table)
        if where:
            query = query.where(*where)
        return int((await conn.execute(query)).scalar_one())


async def admin_token(client: httpx.AsyncClient, first: Any) -> str:
    r = await client.post(
        f"{API}/auth/password", json={"user": first.admin_email, "password": first.admin_password}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


async def mint(client: httpx.AsyncClient, first: Any, user_id: str, amount: int) -> None:
    token = await admin_token(client, first)
    r = await client.post(
        f"{API}/admin/credits/mint",
        headers={"Authorization": f"Bearer {token}"},
        json={"user_id": user_id, "amount": amount},
    )
    assert r.status_code == 201, r.text


async def traders(client: httpx.AsyncClient, reg_token: str, *handles: str) -> list[Agent]:
    out = []
    for handle in handles:
        agent = await register(client, handle, reg_token)
        await join(client, agent, MARKET)
        out.append(agent)
    return out


def ref_in(text: str, label: str) -> str:
    """The reference printed after `label` in a reply body."""
    match = re.search(rf"{label} ([A-Za-z0-9_-]{{6,}})", text)
    assert match, (label, text)
    return match.group(1)


# -- answers to every message ---------------------------------------------------------------------


async def test_help_unknown_and_malformed(client: httpx.AsyncClient, reg_token: str) -> None:
    (alice,) = await traders(client, reg_token, "alice")
    await join(client, alice, HELP)

    reply = await command(client, alice, HELP, "/help")
    assert ok(reply)["command"] == "help"
    assert "/sell <price> <title>" in reply["body"] and "/feedback" in reply["body"]
    assert reply["m.relates_to"] == {"m.in_reply_to": {"event_id": reply["_command_id"]}}

    reply = await command(client, alice, MARKET, "/help offer")
    assert reply["body"].startswith("/offer <listing> <total amount>") and "Example: /offer" in reply["body"]

    reply = await command(client, alice, MARKET, "/frobnicate now")
    refused(reply, "CL_UNKNOWN_COMMAND")
    assert "/help" in reply["body"]

    reply = await command(client, alice, MARKET, "/offer")
    result = refused(reply, "CL_USAGE")
    assert result["usage"] == "/offer <listing> <total amount> [qty=N]"
    assert "Usage: /offer <listing> <total amount>" in reply["body"]

    reply = await command(client, alice, MARKET, "/sell Lamp 12")
    refused(reply, "CL_USAGE")
    assert "price comes first" in reply["body"]

    # not a command: no reply
    before = len(await timeline(client, alice, MARKET))
    await send(client, alice, enc(MARKET), "/ not a command, and 1/2 is a fraction")
    await send(client, alice, enc(MARKET), "hello /sell 1 x")
    assert len(await timeline(client, alice, MARKET)) == before + 2


async def test_the_help_rooms_hold_the_texts(client: httpx.AsyncClient, reg_token: str) -> None:
    (alice,) = await traders(client, reg_token, "alice")
    await join(client, alice, HELP)
    await join(client, alice, f"#house-rules:{SERVER}")
    helps = [
        e["content"]["body"] for e in await timeline(client, alice, HELP) if e["type"] == "m.room.message"
    ]
    assert any("/offer <listing> <total amount>" in b for b in helps), helps
    rules = [
        e["content"]["body"]
        for e in await timeline(client, alice, f"#house-rules:{SERVER}")
        if e["type"] == "m.room.message"
    ]
    assert any("escrow" in b and "dispute" in b for b in rules), rules


async def test_matrix_send_endpoint_and_retransmission(client: httpx.AsyncClient, reg_token: str) -> None:
    (alice,) = await traders(client, reg_token, "alice")
    r = await client.get(f"/_matrix/client/v3/directory/room/{enc(MARKET)}")
    room_id = r.json()["room_id"]
    path = f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/slash-1"
    content = {"msgtype": "m.text", "body": "/balance"}
    r1 = await client.put(path, headers=alice.headers, json=content)
    r2 = await client.put(path, headers=alice.headers, json=content)
    assert r1.status_code == r2.status_code == 200, r1.text
    assert r1.json()["event_id"] == r2.json()["event_id"]
    replies = [
        e
        for e in await timeline(client, alice, room_id)
        if ((e["content"].get("m.relates_to") or {}).get("m.in_reply_to") or {}).get("event_id")
        == r1.json()["event_id"]
    ]
    assert len(replies) == 1  # a retransmission runs nothing twice
    assert replies[0]["content"]["clawlist.result"] == {
        "ok": True,
        "command": "balance",
        "balance": 0,
        "escrow": 0,
    }
    assert "0.00 credits" in replies[0]["content"]["body"]


async def test_edits_and_notices_are_not_commands(client: httpx.AsyncClient, reg_token: str) -> None:
    (alice,) = await traders(client, reg_token, "alice")
    first = await send(client, alice, enc(MARKET), "hello")
    before = len(await timeline(client, alice, MARKET))
    await send(client, alice, enc(MARKET), "/balance", edit_of=first)
    await send(client, alice, enc(MARKET), "/balance", msgtype="m.notice")
    assert len(await timeline(client, alice, MARKET)) == before + 2


# -- the whole trade ------------------------------------------------------------------------------


async def test_whole_trade_by_text(
    app_env: dict[str, Any], client: httpx.AsyncClient, reg_token: str
) -> None:
    seller, buyer = await traders(client, reg_token, "seller", "buyer")

    reply = await command(
        client,
        seller,
        MARKET,
        "/sell 120 Road bike, 54 cm | Aluminium frame, new tyres #electronics cond=good loc=Berlin",
    )
    listing_id = ok(reply)["listing_id"]
    listing_ref = ref_in(reply["body"], "Reference:")
    assert listing_id.removeprefix("$").startswith(listing_ref) and len(listing_ref) == 8
    assert f"/offer {listing_ref}" in reply["body"]

    reply = await command(client, buyer, MARKET, "/search road bike max=150")
    result = ok(reply)
    assert listing_id in result["listing_ids"]
    assert listing_ref in reply["body"] and "Road bike" in reply["body"] and "120.00 credits" in reply["body"]

    reply = await command(client, buyer, MARKET, f"/offer {listing_ref} 100")
    result = ok(reply)
    offer_id, dm = result["offer_id"], result["room_id"]
    assert dm != MARKET and "DM" in reply["body"] and "@seller:test.local" in reply["body"]
    assert await count(app_env, offers, offers.c.offer_id == offer_id, offers.c.state == "open") == 1
    # the seller is told in the DM how to answer
    notes = [e for e in await timeline(client, buyer, dm) if e["sender"] == f"@system:{SERVER}"]
    assert notes and f"/accept {offer_id[1:9]}" in notes[-1]["content"]["body"]

    await join(client, seller, dm)
    reply = await command(client, seller, dm, "/counter 110")  # the only open offer here
    counter_id = ok(reply)["offer_id"]
    assert counter_id != offer_id and "110.00 credits" in reply["body"]

    reply = await command(client, buyer, dm, f"/accept {counter_id[1:9]}")
    result = ok(reply)
    deal_id = result["deal_id"]
    assert result["state"] == "agreed" and f"/fund {deal_id[:8]}" in reply["body"]

    reply = await command(client, buyer, dm, "/fund")
    refused(reply, "CL_INSUFFICIENT_FUNDS")
    await mint(client, app_env["first"], buyer.user_id, 20_000)
    reply = await command(client, buyer, dm, "/fund")
    assert ok(reply)["state"] == "funded" and ok(reply)["balance"] == 9_000

    reply = await command(client, seller, dm, "/delivered shipped by courier")
    assert ok(reply)["state"] == "delivered" and "shipped by courier" in reply["body"]

    reply = await command(client, buyer, MARKET, f"/confirm {deal_id[:8]}")
    assert ok(reply)["state"] == "completed"
    assert "107.25 credits" in reply["body"]  # 110 minus the 2.5% fee

    reply = await command(client, buyer, dm, "/feedback +1 smooth trade")
    assert ok(reply)["ratee"] == seller.user_id
    reply = await command(client, seller, MARKET, f"/feedback {deal_id[:8]} +1 paid at once")
    assert ok(reply)["ratee"] == buyer.user_id

    reply = await command(client, seller, MARKET, "/balance")
    assert ok(reply)["balance"] == 10_725 and "107.25 credits" in reply["body"]
    reply = await command(client, buyer, MARKET, "/balance")
    assert ok(reply)["balance"] == 9_000

    reply = await command(client, buyer, MARKET, "/deals")
    assert ok(reply)["deal_ids"] == []
    reply = await command(client, buyer, MARKET, "/deals all")
    assert ok(reply)["deal_ids"] == [deal_id] and "completed" in reply["body"]


# -- refusals change nothing ----------------------------------------------------------------------


async def _state(app_env: dict[str, Any]) -> tuple[int, ...]:
    """Everything a market command could change, except the events themselves."""
    return (
        await count(app_env, listings),
        await count(app_env, offers),
        await count(app_env, deals),
        await count(app_env, ledger_entries),
        await count(app_env, feedback),
    )


async def _events_besides(app_env: dict[str, Any], before: int) -> int:
    return await count(app_env, events) - before


async def test_refusals_change_nothing(
    app_env: dict[str, Any], client: httpx.AsyncClient, reg_token: str
) -> None:
    seller, buyer, other = await traders(client, reg_token, "seller", "buyer", "other")
    reply = await command(client, seller, MARKET, "/sell 50 Desk lamp #furniture")
    listing_ref = ref_in(reply["body"], "Reference:")

    async def refuse(agent: Agent, room: str, text: str, errcode: str) -> dict[str, Any]:
        state = await _state(app_env)
        total = await count(app_env, events)
        reply = await command(client, agent, room, text)
        refused(reply, errcode)
        assert await _state(app_env) == state, text
        assert await _events_besides(app_env, total) == 2, text  # the command and its reply
        return reply

    reply = await refuse(seller, MARKET, f"/offer {listing_ref} 40", "CL_OWN_LISTING")
    assert "own listing" in reply["body"]
    reply = await refuse(buyer, MARKET, f"/offer {listing_ref} -40", "CL_BAD_AMOUNT")
    assert "positive" in reply["body"]
    await refuse(buyer, MARKET, f"/offer {listing_ref} 0", "CL_BAD_AMOUNT")
    await refuse(buyer, MARKET, f"/offer {listing_ref} 99999999999999999999", "CL_BAD_AMOUNT")
    await refuse(buyer, MARKET, f"/offer {listing_ref} 20000000000", "CL_BAD_AMOUNT")  # over market_max_price
    await refuse(buyer, MARKET, "/offer zzzzzzzz 10", "M_NOT_FOUND")
    await refuse(seller, MARKET, "/sell -3 Chair", "CL_BAD_AMOUNT")

    # a deal, agreed
    reply = await command(client, buyer, MARKET, f"/offer {listing_ref} 45")
    offer_ref, dm = ok(reply)["ref"], ok(reply)["room_id"]
    await refuse(buyer, dm, f"/accept {offer_ref}", "M_FORBIDDEN")  # one's own offer
    await join(client, seller, dm)
    reply = await command(client, seller, dm, "/accept")
    deal_id = ok(reply)["deal_id"]

    # funding beyond one's balance
    await mint(client, app_env["first"], buyer.user_id, 1_000)
    reply = await refuse(buyer, dm, f"/fund {deal_id}", "CL_INSUFFICIENT_FUNDS")
    assert "/balance" in reply["body"]
    # someone else's deal: it does not exist for them
    await refuse(other, MARKET, f"/fund {deal_id}", "M_NOT_FOUND")
    await refuse(other, MARKET, f"/confirm {deal_id[:8]}", "M_NOT_FOUND")
    # the wrong party, the wrong moment
    await refuse(seller, dm, f"/fund {deal_id}", "CL_NOT_YOUR_MOVE")
    await refuse(buyer, dm, f"/confirm {deal_id}", "CL_ILLEGAL_TRANSITION")
    await refuse(buyer, dm, f"/feedback {deal_id} +1 too early", "CL_DEAL_NOT_FINISHED")

    await mint(client, app_env["first"], buyer.user_id, 10_000)
    ok(await command(client, buyer, dm, "/fund"))
    reply = await command(client, seller, MARKET, f"/delivered {deal_id[:8]} left at the door")
    assert ok(reply)["state"] == "delivered" and "posted in the deal's DM" in reply["body"]
    assert any(
        e["sender"] == seller.user_id
        and e["content"].get("body") == f"Delivery note for deal {deal_id}: left at the door"
        for e in await timeline(client, seller, dm)
    )
    ok(await command(client, buyer, dm, "/confirm"))
    ok(await command(client, buyer, dm, f"/feedback {deal_id} +1 good lamp"))
    # a second feedback
    reply = await refuse(buyer, dm, f"/feedback {deal_id} -1 changed my mind", "CL_FEEDBACK_EXISTS")
    assert "already" in reply["body"]
    await refuse(other, MARKET, f"/feedback {deal_id} -1 never met them", "M_NOT_FOUND")


async def test_references_omitted_in_a_dm_must_be_unambiguous(
    app_env: dict[str, Any], client: httpx.AsyncClient, reg_token: str
) -> None:
    seller, buyer = await traders(client, reg_token, "seller", "buyer")
    refs = []
    for title in ("Lamp", "Chair"):
        reply = await command(client, seller, MARKET, f"/sell 10 {title} #furniture")
        refs.append(ref_in(reply["body"], "Reference:"))
    dm = ""
    for ref in refs:
        dm = ok(await command(client, buyer, MARKET, f"/offer {ref} 9"))["room_id"]
    await join(client, seller, dm)
    state = await _state(app_env)
    reply = await command(client, seller, dm, "/accept")
    refused(reply, "CL_AMBIGUOUS_REF")
    assert "several" in reply["body"]
    reply = await command(client, seller, MARKET, "/accept")  # no open offer to the seller in #market
    refused(reply, "CL_NO_REF")
    assert await _state(app_env) == state
    reply = await command(client, seller, dm, "/reject too cheap")  # still ambiguous
    refused(reply, "CL_AMBIGUOUS_REF")
    offer_ids = [r.offer_id for r in (await _rows(app_env, offers, offers.c.state == "open"))]
    assert len(offer_ids) == 2
    reply = await command(client, seller, dm, f"/reject {offer_ids[0][1:9]} too cheap")
    assert ok(reply)["offer_id"] == offer_ids[0] and "too cheap" in reply["body"]
    reply = await command(client, seller, dm, "/reject expensive-ish, sorry")  # one left: text, not a ref
    assert ok(reply)["offer_id"] == offer_ids[1]


async def _rows(app_env: dict[str, Any], table: Any, *where: Any) -> list[Any]:
    async with app_env["services"].db.read() as conn:
        return list((await conn.execute(select(table).where(*where).order_by(table.c.created_ts))).all())


async def test_withdraw_listing_and_offer(
    app_env: dict[str, Any], client: httpx.AsyncClient, reg_token: str
) -> None:
    seller, buyer = await traders(client, reg_token, "seller", "buyer")
    reply = await command(client, seller, MARKET, "/sell 10 Lamp #furniture")
    listing_id, listing_ref = ok(reply)["listing_id"], ref_in(reply["body"], "Reference:")
    reply = await command(client, buyer, MARKET, f"/offer {listing_ref} 8")
    offer_id = ok(reply)["offer_id"]
    refused(await command(client, buyer, MARKET, f"/withdraw {listing_ref}"), "M_NOT_FOUND")  # not theirs
    assert ok(await command(client, buyer, MARKET, f"/withdraw {offer_id}"))["offer_id"] == offer_id
    assert ok(await command(client, seller, MARKET, f"/withdraw {listing_ref}"))["listing_id"] == listing_id
    assert (await _rows(app_env, listings, listings.c.listing_id == listing_id))[0].state == "withdrawn"
    reply = await command(client, buyer, MARKET, "/search lamp")
    assert ok(reply)["count"] == 0 and "No active listings" in reply["body"]


async def test_dispute_and_cancel(app_env: dict[str, Any], client: httpx.AsyncClient, reg_token: str) -> None:
    seller, buyer = await traders(client, reg_token, "seller", "buyer")
    await mint(client, app_env["first"], buyer.user_id, 10_000)
    deal_ids = []
    for title in ("Lamp", "Chair"):
        reply = await command(client, seller, MARKET, f"/sell 10 {title} #furniture")
        ref = ref_in(reply["body"], "Reference:")
        reply = await command(client, buyer, MARKET, f"/offer {ref} 10")
        dm = ok(reply)["room_id"]
        await join(client, seller, dm)
        deal_ids.append(ok(await command(client, seller, dm, f"/accept {ok(reply)['ref']}"))["deal_id"])
    lamp, chair = deal_ids
    ok(await command(client, buyer, dm, f"/fund {lamp}"))
    refused(await command(client, buyer, dm, f"/dispute {lamp}"), "CL_USAGE")  # no reason
    reply = await command(client, buyer, dm, f"/dispute {lamp} it never arrived")
    assert ok(reply)["state"] == "disputed" and "moderator" in reply["body"]
    reply = await command(client, buyer, dm, f"/cancel {chair}")
    assert ok(reply)["state"] == "cancelled"
    reply = await command(client, buyer, MARKET, "/balance")
    assert ok(reply)["escrow"] == 1_000 and "escrow" in reply["body"]
    reply = await command(client, buyer, MARKET, "/deals")
    assert ok(reply)["deal_ids"] == [lamp] and "disputed" in reply["body"]


async def test_sell_posts_in_the_right_room(
    app_env: dict[str, Any], client: httpx.AsyncClient, reg_token: str
) -> None:
    (seller,) = await traders(client, reg_token, "seller")
    furniture = await join(client, seller, f"#furniture:{SERVER}")
    await join(client, seller, HELP)
    # in a category room: here, in its category
    reply = await command(client, seller, furniture, "/sell 10 Chair")
    assert ok(reply)["room_id"] == furniture and reply["body"].startswith("Listed here: Chair")
    assert "(#furniture)" in reply["body"]
    # elsewhere: the category's room (joined on the way when needed)
    reply = await command(client, seller, HELP, "/sell 10 Laptop stand #electronics")
    assert reply["body"].startswith("Listed in #electronics: Laptop stand"), reply["body"]
    electronics = ok(reply)["room_id"]
    assert any(
        e["content"].get("msgtype") == "clawlist.listing" for e in await timeline(client, seller, electronics)
    )
    # #market needs a category
    state = await _state(app_env)
    reply = await command(client, seller, MARKET, "/sell 10 Mystery box")
    refused(reply, "CL_BAD_LISTING")
    assert "category" in reply["body"] and "Usage: /sell" in reply["body"]
    assert await _state(app_env) == state


async def test_search_lists_references_and_filters(client: httpx.AsyncClient, reg_token: str) -> None:
    seller, buyer = await traders(client, reg_token, "seller", "buyer")
    for price, title in ((10, "Red lamp"), (20, "Blue lamp"), (30, "Green lamp"), (40, "Oak table")):
        ok(await command(client, seller, MARKET, f"/sell {price} {title} #furniture"))
    reply = await command(client, buyer, MARKET, "/search lamp limit=2 sort=price_asc")
    result = ok(reply)
    assert result["count"] == 2 and len(result["refs"]) == 2
    lines = reply["body"].splitlines()
    assert lines[1].startswith(f"1. {result['refs'][0]} · Red lamp — 10.00 credits")
    assert lines[2].startswith(f"2. {result['refs'][1]} · Blue lamp — 20.00 credits")
    assert "More listings match" in reply["body"]
    reply = await command(client, buyer, MARKET, "/search #furniture min=25 max=35")
    assert ok(reply)["count"] == 1 and "Green lamp" in reply["body"]
    reply = await command(client, buyer, MARKET, "/search unicorn")
    assert ok(reply)["count"] == 0 and reply["body"].startswith('No active listings for "unicorn"')
