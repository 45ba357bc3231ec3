"""Market profiles, exports and public statistics through the REST API, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from clawlist.actions.market import listings
from tests.api.test_disputes_api import PASSWORD, human
from tests.api.test_reputation_api import (
    API,
    DAY,
    SERVER,
    MarketWorld,
    actor_of,
    assert_error,
    bearer,
    open_world,
)


@pytest.fixture
async def world(settings_for: Any) -> AsyncIterator[MarketWorld]:
    async for w in open_world(settings_for, market_trusted_min_deals=1):
        yield w


async def sell(w: MarketWorld, seller: Any, title: str, price: int = 1000) -> str:
    listing = await listings.create_listing(
        w.svc, actor_of(seller), {"title": title, "description": "d", "category": "furniture", "price": price}
    )
    return str(listing["listing_id"])


async def test_market_profile(world: MarketWorld) -> None:
    w = world
    alice, bob = await w.agent("alice"), await w.agent("bob")
    r = await w.client.patch(
        f"{API}/agents/me", headers=alice.headers, json={"bio": "I sell lamps", "display_name": "Alice"}
    )
    assert r.status_code == 200, r.text
    # alice's human claims her
    owner = await human(w, "owner@example.com", "owner")
    code = (await w.client.post(f"{API}/agents/me/claim-code", headers=alice.headers)).json()["code"]
    assert (
        await w.client.post(f"{API}/humans/me/claims", headers=bearer(owner), json={"code": code})
    ).status_code == 200

    deal_id = await w.completed(bob, alice, 2500, "sold lamp")
    assert (await w.rate(bob, deal_id, 1, "lovely lamp")).status_code == 201
    active = await sell(w, alice, "blue chair")
    w.clock.advance(1)
    newer = await sell(w, alice, "red chair")
    gone = await sell(w, alice, "withdrawn chair")
    await listings.withdraw_listing(w.svc, actor_of(alice), gone)

    r = await w.client.get(f"{API}/agents/{alice.user_id}/market-profile")  # public: no token
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["user_id"] == alice.user_id and p["handle"] == "alice" and p["display_name"] == "Alice"
    assert p["bio"] == "I sell lamps"
    assert p["owner"]["human_id"].startswith("h_")
    assert p["completed_deals"] == 1 and p["reputation"]["completed_deals"] == 1
    assert p["reputation"]["score"] == 1 and p["reputation"]["trusted"] is True
    assert "score 1" in p["reputation_text"] and "trusted" in p["reputation_text"]
    assert p["active_listings_count"] == 2
    assert [x["listing_id"] for x in p["active_listings"]] == [newer, active]  # newest first
    assert p["active_listings"][0]["price_display"] == "10.00 credits"
    assert [f["comment"] for f in p["recent_feedback"]] == ["lovely lamp"]
    # by handle too; an unknown agent is 404
    assert (await w.client.get(f"{API}/agents/alice/market-profile")).json()["user_id"] == alice.user_id
    assert_error(await w.client.get(f"{API}/agents/@ghost:{SERVER}/market-profile"), 404, "M_NOT_FOUND")
    assert_error(await w.client.get(f"{API}/agents/@ghost:elsewhere.org/market-profile"), 404, "M_NOT_FOUND")
    # expired listings are not active
    w.clock.advance(31 * DAY)
    p = (await w.client.get(f"{API}/agents/{alice.user_id}/market-profile")).json()
    assert p["active_listings"] == [] and p["active_listings_count"] == 0


async def test_an_agent_downloads_all_its_data(world: MarketWorld) -> None:
    w = world
    alice, bob, carol = await w.agent("alice"), await w.agent("bob"), await w.agent("carol")
    start = w.clock.now_ms()
    old_deal = await w.completed(bob, alice, 1200, "old lamp")
    w.clock.advance(10 * DAY)
    middle = w.clock.now_ms()
    new_deal = await w.completed(bob, alice, 3400, "new lamp")
    assert (await w.rate(alice, new_deal, 1, "prompt payment")).status_code == 201
    assert (await w.rate(bob, new_deal, -1, "scratched")).status_code == 201

    r = await w.client.get(f"{API}/agents/me/export", headers=bob.headers)
    assert r.status_code == 200, r.text
    assert (
        r.headers["content-type"].startswith("application/json")
        and "attachment" in r.headers["content-disposition"]
    )
    data = r.json()
    assert data["export"]["kind"] == "agent" and data["export"]["user_id"] == bob.user_id
    assert data["export"]["truncated"] == []
    assert data["profile"]["user_id"] == bob.user_id and data["reputation"]["user_id"] == bob.user_id
    assert {d["deal_id"] for d in data["deals"]} == {old_deal, new_deal}
    assert all(d["transitions"] and d["transitions"][-1]["to_state"] == "completed" for d in data["deals"])
    assert len(data["offers"]) == 2 and data["listings"] == []
    assert [f["comment"] for f in data["feedback_given"]] == ["scratched"]
    assert [f["comment"] for f in data["feedback_received"]] == ["prompt payment"]
    # minted, then held twice: the wallet is back at zero
    assert [e["kind"] for e in data["ledger"]] == ["mint", "hold", "mint", "hold"] and data["balance"] == 0
    sent = {e["msgtype"] for e in data["events"] if e["type"] == "m.room.message"}
    assert {"clawlist.offer", "clawlist.deal", "clawlist.feedback"} <= sent
    assert all(e["sender"] == bob.user_id for e in data["events"])

    # a date range: only what happened from `middle` on
    for since in (str(middle), datetime.fromtimestamp(middle / 1000, tz=UTC).isoformat()):
        r = await w.client.get(f"{API}/agents/me/export", headers=bob.headers, params={"since": since})
        ranged = r.json()
        assert [d["deal_id"] for d in ranged["deals"]] == [new_deal], since
        assert all(e["origin_server_ts"] >= middle for e in ranged["events"])
    r = await w.client.get(
        f"{API}/agents/me/export", headers=bob.headers, params={"since": start, "until": middle}
    )
    assert [d["deal_id"] for d in r.json()["deals"]] == [old_deal]
    day = datetime.fromtimestamp(start / 1000, tz=UTC).strftime("%Y-%m-%d")
    r = await w.client.get(f"{API}/agents/me/export", headers=bob.headers, params={"until": day})
    assert r.status_code == 200 and r.json()["deals"] == []

    r = await w.client.get(f"{API}/agents/me/export", headers=bob.headers, params={"format": "md"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    md = r.text
    assert md.startswith(f"# Market export of {bob.user_id}")
    for needle in (old_deal, new_deal, "scratched", "prompt payment", "## Events sent", "34.00 credits"):
        assert needle in md, needle

    # others' data: the agent itself, its owner and staff only
    assert_error(
        await w.client.get(f"{API}/agents/{bob.user_id}/export", headers=carol.headers), 403, "M_FORBIDDEN"
    )
    observer = await human(w, "watcher@example.com", "observer")
    assert_error(await w.client.get(f"{API}/agents/{bob.user_id}/export", headers=bearer(observer)), 403)
    r = await w.client.get(f"{API}/agents/{bob.user_id}/export", headers=bearer(w.admin_token))
    assert r.status_code == 200 and len(r.json()["deals"]) == 2
    owner = await human(w, "owner@example.com", "owner")
    code = (await w.client.post(f"{API}/agents/me/claim-code", headers=bob.headers)).json()["code"]
    assert (
        await w.client.post(f"{API}/humans/me/claims", headers=bearer(owner), json={"code": code})
    ).status_code == 200
    r = await w.client.get(
        f"{API}/agents/{bob.user_id}/export", headers=bearer(owner), params={"format": "md"}
    )
    assert r.status_code == 200, r.text
    assert (await w.client.get(f"{API}/agents/me/export")).status_code == 401
    assert_error(await w.client.get(f"{API}/agents/me/export", headers=bearer(owner)), 403, "M_FORBIDDEN")

    for params in ({"format": "pdf"}, {"since": "yesterday"}, {"until": "2025-13-45"}, {"since": "1" * 30}):
        r = await w.client.get(f"{API}/agents/me/export", headers=bob.headers, params=params)
        assert r.status_code == 400 and r.json()["errcode"], (params, r.text)
    r = await w.client.get(f"{API}/agents/me/export", headers=bob.headers, params={"since": "tomorrow"})
    assert_error(r, 400, "CL_BAD_TIME")


async def test_listing_and_market_exports(world: MarketWorld) -> None:
    w = world
    alice, bob, carol = await w.agent("alice"), await w.agent("bob"), await w.agent("carol")
    moderator = await human(w, "mod@example.com", "moderator")
    deal_id = await w.completed(bob, alice, 900, "green lamp")
    listing_id = (await w.client.get(f"{API}/deals/{deal_id}", headers=bob.headers)).json()["listing_id"]
    assert (await w.rate(bob, deal_id, 1, "good")).status_code == 201
    w.clock.advance(2 * DAY)
    later = w.clock.now_ms()
    await w.disputed(carol, alice, 700)

    path = f"{API}/exports/listings/{listing_id}"
    r = await w.client.get(path, headers=alice.headers)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["listing"]["listing_id"] == listing_id and data["listing"]["title"] == "green lamp"
    assert (
        data["event"]["event_id"] == listing_id and data["event"]["content"]["msgtype"] == "clawlist.listing"
    )
    assert [d["deal_id"] for d in data["deals"]] == [deal_id] and len(data["offers"]) == 1
    assert [f["comment"] for f in data["feedback"]] == ["good"] and data["disputes"] == []
    md = (await w.client.get(path, headers=bearer(moderator), params={"format": "md"})).text
    assert md.startswith("# Listing export: green lamp") and deal_id in md
    for headers in (bob.headers, carol.headers):  # the buyer sees its own offers in its own export
        assert_error(await w.client.get(path, headers=headers), 403, "M_FORBIDDEN")
    assert_error(
        await w.client.get(f"{API}/exports/listings/$nothing", headers=alice.headers), 404, "M_NOT_FOUND"
    )

    path = f"{API}/exports/market"
    assert_error(await w.client.get(path, headers=alice.headers), 403, "M_FORBIDDEN")
    whole = (await w.client.get(path, headers=bearer(moderator))).json()
    assert len(whole["deals"]) == 2 and len(whole["listings"]) == 2 and len(whole["disputes"]) == 1
    recent = (await w.client.get(path, headers=bearer(moderator), params={"since": later})).json()
    assert len(recent["deals"]) == 1 and recent["feedback"] == [] and recent["export"]["since"] == later
    md = (await w.client.get(path, headers=bearer(w.admin_token), params={"format": "md"})).text
    assert md.startswith("# Market export") and "## Disputes" in md


async def test_public_stats(world: MarketWorld) -> None:
    w = world
    r = await w.client.get(f"{API}/stats")  # public: no token
    assert r.status_code == 200, r.text
    empty = r.json()
    assert empty["active_agents"] == 0 and empty["active_listings"] == 0 and empty["volume"] == 0
    assert len(empty["listings_per_day"]) == 7 and len(empty["deals_closed_per_day"]) == 7

    alice, bob, carol = await w.agent("alice"), await w.agent("bob"), await w.agent("carol")
    moderator = await human(w, "mod@example.com", "moderator")
    await sell(w, alice, "still for sale")
    # served from a cache for a few seconds
    assert (await w.client.get(f"{API}/stats")).json() == empty
    w.clock.advance(11)
    assert (await w.client.get(f"{API}/stats")).json()["active_listings"] == 1
    await w.completed(bob, alice, 1000, "day one")  # listing + completed deal today
    w.clock.advance(DAY)
    disputed = await w.disputed(carol, alice, 600)
    r = await w.client.post(
        f"{API}/moderation/disputes/{disputed}/resolve",
        headers=bearer(moderator),
        json={"outcome": "split", "buyer_amount": 200, "decision": "partly"},
    )
    assert r.status_code == 200, r.text
    await w.disputed(bob, alice, 5000)  # open: not in the volume
    cancelled = await w.deal(carol, alice, 50, "never funded")
    r = await w.client.post(f"{API}/deals/{cancelled}/cancel", headers=carol.headers)
    assert r.status_code == 200, r.text

    s = (await w.client.get(f"{API}/stats")).json()
    assert s["active_agents"] == 3 and s["agents"] == 3
    assert (
        s["active_listings"] == 2
    )  # for sale, and the cancelled deal's (back on sale); the rest sold or held
    assert s["volume"] == 1000 + 400 and s["volume_display"] == "14.00 credits"
    assert s["deals"] == {"open": 1, "completed": 1, "resolved": 1, "cancelled": 1}
    listed = [d["count"] for d in s["listings_per_day"]]
    closed = [d["count"] for d in s["deals_closed_per_day"]]
    assert listed[-2:] == [2, 3] and sum(listed) == 5
    assert closed[-2:] == [1, 1] and sum(closed) == 2
    assert s["daily"][-1]["volume"] == 400 and s["daily"][-2]["volume"] == 1000
    today = datetime.fromtimestamp(w.clock.now_ms() / 1000, tz=UTC).strftime("%Y-%m-%d")
    assert s["listings_per_day"][-1]["date"] == today

    # a month later only those who spoke since count as active, and the old days left the series
    w.clock.advance(31 * DAY)
    market = f"%23market:{SERVER}"
    assert (await w.client.post(f"{API}/rooms/{market}/join", headers=bob.headers)).status_code == 200
    r = await w.client.post(
        f"{API}/rooms/{market}/messages",
        headers=bob.headers,
        json={"txn_id": "hello-again", "body": "anyone selling lamps?"},
    )
    assert r.status_code == 200, r.text
    s = (await w.client.get(f"{API}/stats")).json()
    assert s["active_agents"] == 1 and s["active_listings"] == 0
    assert sum(d["count"] for d in s["listings_per_day"]) == 0 and s["volume"] == 1400


async def test_profile_and_stats_answer_bad_input_with_4xx(world: MarketWorld) -> None:
    w = world
    alice = await w.agent("alice")
    for path in (
        f"{API}/agents/%00/market-profile",
        f"{API}/agents/{'x' * 300}/market-profile",
        f"{API}/agents/{alice.user_id}/feedback?limit=0",
        f"{API}/agents/{alice.user_id}/feedback?limit=abc",
        f"{API}/exports/listings/%00",
    ):
        r = await w.client.get(path, headers=alice.headers)
        assert 400 <= r.status_code < 500 and r.json()["errcode"], (path, r.text)
    data = orjson.loads((await w.client.get(f"{API}/agents/{alice.user_id}/feedback")).content)
    assert data == {"user_id": alice.user_id, "feedback": []}
    assert PASSWORD  # the moderators' password helper is shared with the dispute tests
