"""Listing search (GET /api/v1/listings) on SQLite FTS5 and PostgreSQL full-text search: filters,
sorts, relevance, keyset pagination, cursors, hostile query text, reputation order (the sellers'
real reputation scores, from trades run through the real actions), expiry, access.
Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from clawlist.actions.market import deals
from clawlist.actions.market import listings as listing_actions
from clawlist.actions.market.reputation import all_ratings, reputation
from clawlist.actions.market.search import SELLER_SCORES, seller_scores
from clawlist.core import reputation as rep
from clawlist.storage.tables import deals as deals_table
from clawlist.storage.tables import disputes, feedback, listings
from tests.api.test_listings_api import error, listed, market_env
from tests.api.test_reputation_api import MarketWorld, actor_of, open_world
from tests.helpers import Agent, register

API = "/api/v1"


async def search(client: httpx.AsyncClient, agent: Agent | dict[str, str], **params: Any) -> dict[str, Any]:
    headers = agent.headers if isinstance(agent, Agent) else agent
    r = await client.get(f"{API}/listings", headers=headers, params=params)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def ids(page: dict[str, Any]) -> list[str]:
    return [x["listing_id"] for x in page["listings"]]


async def all_pages(
    client: httpx.AsyncClient, agent: Agent, cursor: str | None = None, **params: Any
) -> list[str]:
    seen: list[str] = []
    for _ in range(50):
        page = await search(client, agent, **params, **({"cursor": cursor} if cursor else {}))
        seen += ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


@pytest.fixture
async def market(client: httpx.AsyncClient, reg_token: str, app_env: dict[str, Any]) -> dict[str, Any]:
    alice = await register(client, "alice", reg_token)
    bob = await register(client, "bob", reg_token)
    carol = await register(client, "carol", reg_token)
    specs: dict[str, tuple[Agent, dict[str, Any]]] = {
        "A": (
            alice,
            {
                "title": "Noise cancelling headphones",
                "category": "electronics",
                "price": 8000,
                "location": "Berlin",
                "country": "DE",
                "tags": ["audio"],
            },
        ),
        "B": (
            alice,
            {
                "title": "Phone charger",
                "description": "Charges any phone over USB-C; a headphones adapter is included.",
                "category": "electronics",
                "price": 1500,
                "location": "Munich",
                "country": "DE",
            },
        ),
        "C": (
            bob,
            {
                "title": "Wireless headphones",
                "category": "electronics",
                "price": 5000,
                "location": "Paris",
                "country": "FR",
                "tags": ["audio", "bluetooth"],
            },
        ),
        "D": (
            bob,
            {
                "title": "Oak desk",
                "description": "Solid oak. Room for a headphones stand.",
                "category": "furniture",
                "price": 20000,
                "location": "Berlin",
            },
        ),
        "E": (
            carol,
            {"title": "Python tutoring", "category": "services", "price": 3000, "location": "Online"},
        ),
        "F": (carol, {"title": "Translation German to English", "category": "skills", "price": 1000}),
        "F2": (carol, {"title": "Translation French to English", "category": "skills", "price": 1000}),
        "G": (bob, {"title": "Bookshelf", "category": "furniture", "price": 7000}),
    }
    made: dict[str, dict[str, Any]] = {}
    for key, (agent, fields) in specs.items():
        made[key] = await listed(client, agent, **fields)
    r = await client.post(f"{API}/listings/{made['G']['listing_id']}/withdraw", headers=bob.headers)
    assert r.status_code == 200
    return {
        "agents": (alice, bob, carol),
        "id": {k: v["listing_id"] for k, v in made.items()},
        "listing": made,
        "svc": app_env["services"],
    }


async def test_filters(client, market):
    alice, bob, _ = market["agents"]
    i = market["id"]

    async def found(**params: Any) -> set[str]:
        return set(ids(await search(client, alice, **params)))

    active = {i[k] for k in ("A", "B", "C", "D", "E", "F", "F2")}
    assert await found() == active  # withdrawn G is not active
    assert await found(category="electronics") == {i["A"], i["B"], i["C"]}
    assert await found(min_price=5000) == {i["A"], i["C"], i["D"]}
    assert await found(max_price=3000) == {i["B"], i["E"], i["F"], i["F2"]}
    assert await found(min_price=1500, max_price=5000) == {i["B"], i["C"], i["E"]}
    assert await found(location="berlin") == {i["A"], i["D"]}
    assert await found(location="DE") == {i["A"], i["B"]}  # the country is part of the place
    assert await found(location="Berlin, Germany") == set()  # every word must match
    assert await found(seller=bob.user_id) == {i["C"], i["D"]}
    assert await found(state="withdrawn") == {i["G"]}
    assert await found(state="any") == active | {i["G"]}
    assert await found(state="sold") == set()
    assert await found(q="headphones", category="furniture") == {i["D"]}
    assert await found(q="headphones", location="berlin", max_price=10000) == {i["A"]}
    assert await found(q="translation english") == {i["F"], i["F2"]}
    assert await found(q="translation german") == {i["F"]}
    assert await found(q="bookshelf") == set()
    assert await found(q="bookshelf", state="withdrawn") == {i["G"]}
    # stemming and case: 'Phones' finds 'phone'; tags are searched too
    assert i["B"] in await found(q="Phones")
    assert await found(q="bluetooth") == {i["C"]}


async def test_relevance_ranks_title_over_description(client, market):
    alice = market["agents"][0]
    i = market["id"]
    page = await search(client, alice, q="headphones")
    assert page["sort"] == "relevance"
    order = ids(page)
    assert set(order[:2]) == {i["A"], i["C"]} and set(order[2:]) == {i["B"], i["D"]}
    # without words, relevance is newest first
    assert (await search(client, alice))["sort"] == "newest"


async def test_sorts(client, market):
    alice = market["agents"][0]
    i = market["id"]
    by_price = [i[k] for k in ("F", "F2", "B", "E", "C", "A", "D")]
    ties = sorted([i["F"], i["F2"]])  # equal prices: listing id breaks the tie
    assert ids(await search(client, alice, sort="price_asc")) == ties + by_price[2:]
    assert ids(await search(client, alice, sort="price_desc")) == by_price[2:][::-1] + ties[::-1]
    newest = (await search(client, alice, sort="newest"))["listings"]
    keys = [(x["created_ts"], x["listing_id"]) for x in newest]
    assert keys == sorted(keys, reverse=True) and len(keys) == 7


async def test_pagination_is_stable_and_complete(client, market):
    alice = market["agents"][0]
    for params in (
        {"sort": "newest"},
        {"sort": "price_asc"},
        {"sort": "price_desc"},
        {"sort": "reputation"},
        {"q": "headphones"},
        {"q": "headphones", "sort": "price_desc"},
        {"state": "any", "sort": "newest"},
        {"location": "berlin", "sort": "price_asc"},
    ):
        whole = ids(await search(client, alice, limit=100, **params))
        assert whole, params
        for size in (1, 2, 3):
            paged = await all_pages(client, alice, limit=size, **params)
            assert paged == whole, (params, size)
    # a new listing posted between pages does not disturb the pages of a price search
    first = await search(client, alice, sort="price_asc", limit=3)
    await listed(client, alice, title="Cheap cable", category="electronics", price=1)
    rest = await all_pages(client, alice, sort="price_asc", limit=3, cursor=first["next_cursor"])
    assert len(set(ids(first)) | set(rest)) == 7 and not set(ids(first)) & set(rest)


async def test_bad_cursors_and_parameters_are_400(client, market):
    alice = market["agents"][0]
    page = await search(client, alice, sort="price_asc", limit=2)
    cursor = page["next_cursor"]
    assert cursor
    for params in (
        {"sort": "price_desc", "limit": 2, "cursor": cursor},  # another sort
        {"sort": "price_asc", "category": "skills", "cursor": cursor},  # other filters
        {"cursor": "garbage!"},
        {"cursor": cursor[:-3]},
        {"cursor": "x" * 2000},
    ):
        r = await client.get(f"{API}/listings", headers=alice.headers, params=params)
        error(r, 400, "CL_BAD_CURSOR")
    for params, errcode in (
        ({"min_price": "cheap"}, "M_INVALID_PARAM"),
        ({"min_price": -1}, "M_INVALID_PARAM"),
        ({"limit": 0}, "M_INVALID_PARAM"),
        ({"sort": "cheapest"}, "M_INVALID_PARAM"),
        ({"state": "gone"}, "M_INVALID_PARAM"),
        ({"category": "toys"}, "M_INVALID_PARAM"),
        ({"seller": "alice"}, "M_INVALID_PARAM"),
        ({"min_price": 10, "max_price": 5}, "M_INVALID_PARAM"),
        ({"q": "x" * 201}, "M_INVALID_PARAM"),
        ({"q": "a\x00b"}, "M_INVALID_PARAM"),
    ):
        r = await client.get(f"{API}/listings", headers=alice.headers, params=params)
        error(r, 400, errcode)


HOSTILE = [
    '"',
    '""',
    "'",
    "a OR",
    "OR",
    "AND NOT",
    "NEAR(",
    "NEAR(a b, 2)",
    "title:oak",
    "{title}: oak",
    "place : berlin",
    "*",
    "oak*",
    "-oak",
    "^oak",
    "oak & desk | !x",
    "oak <-> desk",
    "'; DROP TABLE listings; --",
    "\\",
    "(((",
    "(((oak",
    "a:b:c",
    "x" * 200,
    "café über",
    "日本語 ヘッドホン",
    "e\u0301",
    "🎧",
    "the",
    "a_b-c.d",
    "%_",
]


async def test_hostile_query_text_never_fails(client, market):
    alice = market["agents"][0]
    for text in HOSTILE:
        for params in ({"q": text}, {"location": text}, {"q": text, "location": text, "sort": "reputation"}):
            r = await client.get(f"{API}/listings", headers=alice.headers, params=params)
            assert r.status_code in (200, 400), (text, r.text)
            if r.status_code == 400:
                assert r.json()["errcode"] == "M_INVALID_PARAM", text
            else:
                assert isinstance(r.json()["listings"], list), text
    # the words still count: quoting never loses them
    for text in ("oak*", "-oak", "^oak", "(((oak", "oak:"):
        assert ids(await search(client, alice, q=text + " desk")) == [market["id"]["D"]], text


async def test_expired_listings_leave_the_active_search(client, market):
    alice = market["agents"][0]
    i, svc = market["id"], market["svc"]
    async with svc.db.write() as conn:
        await conn.execute(update(listings).where(listings.c.listing_id == i["A"]).values(expires_ts=1))
    assert i["A"] not in ids(await search(client, alice, q="headphones"))
    page = await search(client, alice, state="expired")
    assert ids(page) == [i["A"]] and page["listings"][0]["state"] == "expired"
    assert ids(await search(client, alice, state="active", seller=alice.user_id)) == [i["B"]]


async def test_who_may_search(client, market, app_env):
    error(await client.get(f"{API}/listings"), 401, "M_MISSING_TOKEN")
    error(await client.get(f"{API}/listings/{market['id']['A']}"), 401, "M_MISSING_TOKEN")
    first = app_env["first"]
    r = await client.post(
        f"{API}/auth/password", json={"user": first.admin_email, "password": first.admin_password}
    )
    human = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert len(ids(await search(client, human, q="headphones"))) == 4
    r = await client.get(f"{API}/listings/{market['id']['A']}", headers=human)
    assert r.status_code == 200 and r.json()["title"] == "Noise cancelling headphones"


async def test_limit_is_capped_by_the_setting(settings_for):
    async with market_env(settings_for, market_search_max_limit=3) as env:
        client = env["client"]
        alice = await register(client, "alice", env["token"])
        for n in range(5):
            await listed(client, alice, title=f"Chair {n}")
        page = await search(client, alice, limit=50)
        assert len(page["listings"]) == 3 and page["next_cursor"]
        assert len(await all_pages(client, alice, limit=50)) == 5
        assert len((await search(client, alice))["listings"]) == 3  # default 20, capped too


async def test_relevance_ties_page_in_listing_id_order(client, market):
    bob = market["agents"][1]
    same = {
        (await listed(client, bob, title="Brass lamp", category="furniture"))["listing_id"] for _ in range(9)
    }
    page = await search(client, bob, q="brass lamp", limit=100)
    assert ids(page) == sorted(same)  # equal scores: listing id ascending
    for size in (1, 2, 4):
        assert await all_pages(client, bob, q="brass lamp", limit=size) == sorted(same)


# -- reputation order: the sellers' real scores ------------------------------------------------------


async def rate(w: MarketWorld, rater: Agent, deal_id: str, rating: int) -> None:
    r = await w.rate(rater, deal_id, rating)
    assert r.status_code == 201, r.text


@pytest.fixture
async def rated(settings_for: Any) -> AsyncIterator[dict[str, Any]]:
    """Trades through the real actions, then each seller's active listings. Scores (unique
    positive minus unique negative counterparties, resolved disputes counted):
    bob 2, alice 1 (three deals, one counterparty), carol 0 and frank 0 (never rated),
    erin -1 (at fault in a released dispute), dave -1 (refunded dispute; the buyer's +1 on that
    deal is replaced by the finding, and a neutral rating counts for nothing)."""
    async for w in open_world(settings_for):
        names = ("alice", "bob", "carol", "dave", "erin", "frank", "gina")
        alice, bob, carol, dave, erin, frank, gina = [await w.agent(n) for n in names]
        for buyer in (carol, gina):
            await rate(w, buyer, await w.completed(buyer, bob), 1)
        disputed = await w.disputed(frank, bob)  # a split blames nobody
        await deals.resolve(w.svc, w.system, disputed, "split", buyer_amount=2500, decision="half each")
        for _ in range(3):
            await rate(w, carol, await w.completed(carol, alice), 1)
        disputed = await w.disputed(gina, dave)
        await deals.resolve(w.svc, w.system, disputed, "refund", decision="never sent")
        await rate(w, gina, disputed, 1)
        await rate(w, carol, await w.completed(carol, dave), 0)
        disputed = await w.disputed(erin, frank)
        await deals.resolve(w.svc, w.system, disputed, "release", decision="it was delivered")
        posted: dict[str, list[str]] = {}
        for seller, titles in (
            (bob, ["Oak table", "Brass lamp"]),
            (alice, ["Oak chair", "Desk fan"]),
            (carol, ["Oak stool"]),
            (frank, ["Wool rug", "Oak shelf"]),
            (dave, ["Oak bench"]),
            (erin, ["Old radio", "Oak crate"]),
        ):
            for n, title in enumerate(titles):
                category = "furniture" if "Oak" in title else "electronics"
                fields = {"title": title, "category": category, "price": 1000 + 500 * n}
                listing = await listing_actions.create_listing(w.svc, actor_of(seller), fields)
                posted.setdefault(seller.user_id, []).append(listing["listing_id"])
        scores = {
            a.user_id: s for a, s in ((alice, 1), (bob, 2), (carol, 0), (dave, -1), (erin, -1), (frank, 0))
        }
        yield {
            "world": w,
            "agents": dict(zip(names, (alice, bob, carol, dave, erin, frank, gina), strict=True)),
            "posted": posted,
            "scores": scores,
        }


def in_reputation_order(found: list[dict[str, Any]]) -> bool:
    """Score descending, then newest first, then listing id descending."""
    keys = [(x["seller_score"], x["created_ts"], x["listing_id"]) for x in found]
    return keys == sorted(keys, reverse=True)


async def test_reputation_sort_follows_the_sellers_scores(rated: dict[str, Any]) -> None:
    w, agents, scores = rated["world"], rated["agents"], rated["scores"]
    viewer = agents["gina"]
    page = await search(w.client, viewer, sort="reputation", limit=100)
    found = page["listings"]
    assert page["sort"] == "reputation" and not page["next_cursor"]
    # every listing carries its seller's score, the very score the profile shows
    for seller in {x["seller"] for x in found}:
        assert (await reputation(w.svc, seller))["score"] == scores.get(seller, 0), seller
    for x in found:
        assert x["seller_score"] == scores.get(x["seller"], 0), x
    mine = {lid for ids_ in rated["posted"].values() for lid in ids_}
    assert mine <= {x["listing_id"] for x in found}
    # the higher score ranks first: bob (2) above alice (1, more deals), zeros, then -1
    sellers = [x["seller"] for x in found if x["listing_id"] in mine]
    a = agents
    assert sellers[:4] == [a["bob"].user_id] * 2 + [a["alice"].user_id] * 2
    assert set(sellers[4:7]) == {a["carol"].user_id, a["frank"].user_id}
    assert set(sellers[7:]) == {a["dave"].user_id, a["erin"].user_id}
    assert in_reputation_order(found)
    # with words (one statement over the full-text index): the same order, narrowed
    oak = await search(w.client, viewer, sort="reputation", q="oak", limit=100)
    assert ids(oak) == [x["listing_id"] for x in found if x["title"].startswith("Oak")]


async def test_reputation_pages_are_complete_without_duplicates(rated: dict[str, Any]) -> None:
    w, agents = rated["world"], rated["agents"]
    viewer = agents["carol"]
    for params in (
        {},
        {"q": "oak"},
        {"category": "furniture"},
        {"max_price": 1000},
        {"state": "any"},
        {"seller": agents["erin"].user_id},
        {"q": "oak", "min_price": 1000, "max_price": 1000},
    ):
        whole = ids(await search(w.client, viewer, sort="reputation", limit=100, **params))
        assert whole, params
        for size in (1, 2, 3, 5):
            paged = await all_pages(w.client, viewer, sort="reputation", limit=size, **params)
            assert paged == whole, (params, size)
            assert len(set(paged)) == len(paged), (params, size)


async def test_a_new_rating_reorders_the_next_search(rated: dict[str, Any]) -> None:
    w, agents = rated["world"], rated["agents"]
    viewer, frank = agents["gina"], agents["frank"]
    first = await search(w.client, viewer, sort="reputation", limit=2)
    assert {x["seller"] for x in first["listings"]} == {agents["bob"].user_id}
    # frank sells to three buyers who rate him +1: score 3, above bob
    for buyer in (agents["alice"], agents["carol"], agents["gina"]):
        await rate(w, buyer, await w.completed(buyer, frank, title="a rug"), 1)
    assert (await reputation(w.svc, frank.user_id))["score"] == 3
    found = (await search(w.client, viewer, sort="reputation", limit=100))["listings"]
    assert [x["seller"] for x in found[:2]] == [frank.user_id] * 2
    assert found[0]["seller_score"] == 3 and in_reputation_order(found)
    # a cursor taken before the change still ends the walk without repeating a listing
    rest = await all_pages(w.client, viewer, sort="reputation", limit=3, cursor=first["next_cursor"])
    assert not set(rest) & set(ids(first)) and len(set(rest)) == len(rest)


async def test_the_sql_scores_equal_the_reputation_rules(app_env: dict[str, Any]) -> None:
    """Random feedback and dispute resolutions (rows as the deal and feedback actions write them):
    the scores computed in SQL are `core.reputation.score` over the ratings the reputation
    action reads, for every agent; the per-process copy follows a new rating and a resolution."""
    svc = app_env["services"]
    rng = random.Random(3)
    agents = [f"@agent{i}:test.local" for i in range(12)]
    deal_rows, feedback_rows, dispute_rows = [], [], []
    for d in range(300):
        seller, buyer = rng.sample(agents, 2)
        deal_id = f"deal-{d}"
        outcome = rng.choice((None, None, None, "refund", "release", "split"))
        open_only = outcome is not None and rng.random() < 0.2  # an open dispute counts for nothing
        deal_rows.append(
            {
                "deal_id": deal_id,
                "listing_id": f"$l{d}",
                "offer_id": f"$o{d}",
                "room_id": "!dm:test.local",
                "buyer": buyer,
                "seller": seller,
                "amount": 100,
                "quantity": 1,
                "state": "completed" if outcome is None else "resolved",
                "created_ts": 1,
                "updated_ts": 1,
            }
        )
        if outcome is not None:
            dispute_rows.append(
                {
                    "deal_id": deal_id,
                    "opened_by": buyer,
                    "reason": "r",
                    "state": "open" if open_only else "resolved",
                    "opened_ts": 1,
                    "resolved_ts": None if open_only else 2,
                    "outcome": None if open_only else outcome,
                }
            )
        for rater, ratee in ((buyer, seller), (seller, buyer)):
            if rng.random() < 0.7:
                feedback_rows.append(
                    {
                        "deal_id": deal_id,
                        "rater": rater,
                        "ratee": ratee,
                        "rating": rng.choice((1, 1, 0, -1)),
                        "comment": "",
                        "deal_amount": 100,
                        "created_ts": 1,
                    }
                )
    async with svc.db.write() as conn:
        await conn.execute(deals_table.insert(), deal_rows)
        await conn.execute(feedback.insert(), feedback_rows)
        await conn.execute(disputes.insert(), dispute_rows)

    async def both() -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        async with svc.db.read() as conn:
            in_sql = {str(r.seller): int(r.n) for r in (await conn.execute(SELLER_SCORES)).all()}
            ratings = await all_ratings(conn)
            kept = dict((await seller_scores(svc, conn)).ranked)
        received: dict[str, list[rep.Rating]] = {}
        for r in ratings:
            received.setdefault(r.ratee, []).append(r)
        return in_sql, {k: rep.score(v) for k, v in received.items()}, kept

    in_sql, by_rules, kept = await both()
    assert in_sql == by_rules and len(in_sql) == len(agents)
    assert kept == {k: v for k, v in by_rules.items() if v} and any(v < 0 for v in kept.values())
    # a new rating, then a resolution: the kept copy follows both
    target = min(kept, key=lambda k: kept[k])
    async with svc.db.write() as conn:
        await conn.execute(
            deals_table.insert().values(
                deal_id="deal-new",
                listing_id="$new",
                offer_id="$onew",
                room_id="!dm:test.local",
                buyer="@newcomer:test.local",
                seller=target,
                amount=100,
                quantity=1,
                state="resolved",
                created_ts=1,
                updated_ts=1,
            )
        )
        await conn.execute(
            feedback.insert().values(
                deal_id="deal-new",
                rater="@newcomer:test.local",
                ratee=target,
                rating=1,
                comment="",
                deal_amount=100,
                created_ts=3,
            )
        )
    _, by_rules, kept = await both()
    assert kept[target] == by_rules[target] == in_sql[target] + 1
    async with svc.db.write() as conn:
        await conn.execute(
            disputes.insert().values(
                deal_id="deal-new",
                opened_by="@newcomer:test.local",
                reason="r",
                state="resolved",
                opened_ts=3,
                resolved_ts=4,
                outcome="refund",
            )
        )
    _, by_rules, kept = await both()
    assert kept.get(target, 0) == by_rules[target] == in_sql[target] - 1  # the +1 became a -1
