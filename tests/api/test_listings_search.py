"""Listing search (GET /api/v1/listings) on SQLite FTS5 and PostgreSQL full-text search: filters,
sorts, relevance, keyset pagination, cursors, hostile query text, reputation order, expiry, access.
Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import update

from clawlist.storage.tables import listings
from tests.api.test_listings_api import add_deal, error, listed, market_env
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


async def test_reputation_sort_uses_completed_deals(client, market):
    alice, bob, carol = market["agents"]
    i, svc = market["id"], market["svc"]
    await add_deal(svc, i["C"], bob.user_id, alice.user_id, "completed", 1)
    await add_deal(svc, i["D"], bob.user_id, carol.user_id, "completed", 2)
    await add_deal(svc, i["E"], carol.user_id, alice.user_id, "resolved", 3)
    await add_deal(svc, i["A"], alice.user_id, bob.user_id, "cancelled", 4)
    await add_deal(svc, i["B"], alice.user_id, bob.user_id, "funded", 5)
    page = await search(client, alice, sort="reputation")
    sellers = [(x["seller"], x["seller_completed_deals"]) for x in page["listings"]]
    assert [s for s, _ in sellers] == [bob.user_id] * 2 + [carol.user_id] * 3 + [alice.user_id] * 2
    assert [n for _, n in sellers] == [2, 2, 1, 1, 1, 0, 0]
    within = [(x["created_ts"], x["listing_id"]) for x in page["listings"][2:5]]
    assert within == sorted(within, reverse=True)  # newest first within the same reputation
    page = await search(client, alice, sort="reputation", q="headphones")
    found = page["listings"]
    assert [x["seller"] for x in found] == [bob.user_id] * 2 + [alice.user_id] * 2
    assert {x["listing_id"] for x in found[:2]} == {i["C"], i["D"]}
    for group in (found[:2], found[2:]):
        keys = [(x["created_ts"], x["listing_id"]) for x in group]
        assert keys == sorted(keys, reverse=True)


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


async def test_reputation_pages_cross_from_sellers_with_deals_to_the_rest(client, market):
    alice, bob, carol = market["agents"]
    i, svc = market["id"], market["svc"]
    for n in range(3):
        await add_deal(svc, i["C"], bob.user_id, alice.user_id, "completed", 10 + n)
    await add_deal(svc, i["E"], carol.user_id, alice.user_id, "completed", 20)
    whole = await search(client, alice, sort="reputation", limit=100)
    order = [(x["seller"], x["seller_completed_deals"]) for x in whole["listings"]]
    assert order == [(bob.user_id, 3)] * 2 + [(carol.user_id, 1)] * 3 + [(alice.user_id, 0)] * 2
    for size in (1, 2, 3, 4):
        assert await all_pages(client, alice, sort="reputation", limit=size) == ids(whole)
    for params in ({"category": "skills"}, {"max_price": 5000}, {"state": "any"}, {"seller": carol.user_id}):
        whole = ids(await search(client, alice, sort="reputation", limit=100, **params))
        assert whole, params
        assert await all_pages(client, alice, sort="reputation", limit=2, **params) == whole, params


async def test_relevance_ties_page_in_listing_id_order(client, market):
    bob = market["agents"][1]
    same = {
        (await listed(client, bob, title="Brass lamp", category="furniture"))["listing_id"] for _ in range(9)
    }
    page = await search(client, bob, q="brass lamp", limit=100)
    assert ids(page) == sorted(same)  # equal scores: listing id ascending
    for size in (1, 2, 4):
        assert await all_pages(client, bob, q="brass lamp", limit=size) == sorted(same)
