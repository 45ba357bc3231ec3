"""Listings through the REST API and the Matrix façade: posting (the event and its projection in one
transaction, nothing written when refused), validation reasons, prohibited items, the per-agent
limit, market rooms, withdrawal and redaction. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select, update

from clawlist.actions.market import listings as listing_actions
from clawlist.actions.services import Services
from clawlist.app import create_app
from clawlist.storage.tables import deals, events, listings
from tests.helpers import Agent, register

API = "/api/v1"
M = "/_matrix/client/v3"
SERVER = "test.local"
MARKET = f"#market:{SERVER}"


def enc(ref: str) -> str:
    return quote(ref, safe="")


def alias(name: str) -> str:
    return f"#{name}:{SERVER}"


@contextlib.asynccontextmanager
async def market_env(settings_for: Any, **overrides: Any) -> AsyncIterator[dict[str, Any]]:
    """A running app with settings overrides (the `app_env` fixture has none)."""
    settings = settings_for(**overrides)
    app = create_app(settings, announce=lambda _line: None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield {
                "client": client,
                "services": app.state.services,
                "token": app.state.first_start.registration_token,
                "first": app.state.first_start,
            }


async def post_listing(client: httpx.AsyncClient, agent: Agent, **fields: Any) -> httpx.Response:
    body = {"title": "Desk lamp", "price": 1250, "category": "furniture", **fields}
    return await client.post(f"{API}/listings", headers=agent.headers, json=body)


async def listed(client: httpx.AsyncClient, agent: Agent, **fields: Any) -> dict[str, Any]:
    r = await post_listing(client, agent, **fields)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def error(r: httpx.Response, status: int, errcode: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["errcode"] == errcode, body
    return body


async def counts(svc: Services) -> tuple[int, int]:
    async with svc.db.read() as conn:
        n_events = (await conn.execute(select(func.count()).select_from(events))).scalar_one()
        n_listings = (await conn.execute(select(func.count()).select_from(listings))).scalar_one()
    return int(n_events), int(n_listings)


async def room_id_of(client: httpx.AsyncClient, agent: Agent, ref: str) -> str:
    r = await client.post(f"{API}/rooms/{enc(ref)}/join", headers=agent.headers)
    assert r.status_code == 200, r.text
    return str(r.json()["room_id"])


async def mx_send(
    client: httpx.AsyncClient, agent: Agent, room: str, content: dict[str, Any], txn_id: str
) -> httpx.Response:
    return await client.put(
        f"{M}/rooms/{enc(room)}/send/m.room.message/{enc(txn_id)}", headers=agent.headers, json=content
    )


async def timeline(client: httpx.AsyncClient, agent: Agent, room: str) -> list[dict[str, Any]]:
    r = await client.get(f"{API}/rooms/{enc(room)}/messages", headers=agent.headers, params={"limit": 50})
    assert r.status_code == 200, r.text
    return list(r.json()["chunk"])


async def add_deal(svc: Services, listing_id: str, seller: str, buyer: str, state: str, n: int = 0) -> None:
    """A deals row as H-A's deal actions write it (the test only needs its listing, seller, state)."""
    now = svc.clock.now_ms()
    async with svc.db.write() as conn:
        await conn.execute(
            deals.insert().values(
                deal_id=f"deal-{listing_id[-8:]}-{state}-{n}",
                listing_id=listing_id,
                offer_id=f"$offer-{listing_id[-8:]}-{state}-{n}",
                room_id="!dm:test.local",
                buyer=buyer,
                seller=seller,
                amount=100,
                quantity=1,
                state=state,
                created_ts=now,
                updated_ts=now,
            )
        )


@pytest.fixture
async def pair(client: httpx.AsyncClient, reg_token: str) -> tuple[Agent, Agent]:
    return await register(client, "alice", reg_token), await register(client, "bob", reg_token)


# -- posting ---------------------------------------------------------------------------------------


async def test_post_writes_the_event_and_the_listing(client, pair, app_env):
    alice, _ = pair
    svc = app_env["services"]
    listing = await listed(
        client,
        alice,
        title="USB-C cable",
        category="Electronics",
        price=350,
        quantity=3,
        condition="new",
        location="Berlin",
        country="de",
        tags=["usb", "cable"],
        images=["mxc://test.local/img1"],
    )
    lid = listing["listing_id"]
    assert listing["state"] == "active" and listing["available"] == 3 and listing["quantity"] == 3
    assert listing["category"] == "electronics" and listing["country"] == "DE"
    assert listing["seller"] == alice.user_id and listing["price_text"] == "3.50 credits"
    assert listing["tags"] == ["usb", "cable"] and listing["images"] == ["mxc://test.local/img1"]
    day = 86_400_000
    assert listing["expires_ts"] - listing["created_ts"] == 30 * day  # market_listing_ttl_days
    # posted in the category's room (the agent was joined to it), as a readable message
    electronics = await room_id_of(client, alice, alias("electronics"))
    assert listing["room_id"] == electronics
    event = next(e for e in await timeline(client, alice, electronics) if e["event_id"] == lid)
    assert event["content"]["msgtype"] == "clawlist.listing"
    assert (
        event["content"]["body"] == "Selling: 3 × USB-C cable — 3.50 credits each (electronics, Berlin, DE)"
    )
    assert event["content"]["price"] == 350 and event["sender"] == alice.user_id
    r = await client.get(f"{API}/listings/{lid}", headers=alice.headers)
    assert r.status_code == 200 and r.json() == listing
    # retrying with the same txn_id returns the same listing, writes nothing more
    first = await listed(client, alice, title="Chair", txn_id="sell-chair")
    before = await counts(svc)
    again = await listed(client, alice, title="Chair", txn_id="sell-chair")
    assert again["listing_id"] == first["listing_id"] and await counts(svc) == before
    # in #market when asked
    r = await post_listing(client, alice, room=MARKET)
    assert r.status_code == 201 and r.json()["room_id"] == await room_id_of(client, alice, MARKET)


async def test_refused_listings_write_nothing(client, pair, app_env):
    alice, _ = pair
    svc = app_env["services"]
    await listed(client, alice)  # joins the furniture room
    before = await counts(svc)
    error(await post_listing(client, alice, price=0), 400, "CL_BAD_LISTING")
    body = error(await post_listing(client, alice, price="12.50"), 400, "CL_BAD_LISTING")
    assert body["field"] == "price" and "minor units" in body["error"]
    body = error(await post_listing(client, alice, prize=5), 400, "CL_BAD_LISTING")
    assert body["field"] == "prize" and "not a listing field" in body["error"]
    body = error(await post_listing(client, alice, category="weapons"), 400, "CL_PROHIBITED")
    assert body["rule"] == "category:weapons"
    body = error(await post_listing(client, alice, description="fresh credential dump"), 400, "CL_PROHIBITED")
    assert body["rule"] == "keyword:credential dump" and "description" in body["error"]
    error(await client.post(f"{API}/listings", headers=alice.headers, json=[1]), 400, "M_BAD_JSON")
    error(await post_listing(client, alice, room=5), 400, "M_BAD_JSON")
    # the same rules on the Matrix path
    furniture = await room_id_of(client, alice, alias("furniture"))
    content = {"msgtype": "clawlist.listing", "body": "lamp", "title": "Lamp", "price": -1}
    body = error(await mx_send(client, alice, furniture, content, "bad-1"), 400, "CL_BAD_LISTING")
    assert body["field"] == "price"
    content = {"msgtype": "clawlist.listing", "body": "kit", "title": "Ransomware kit", "price": 100}
    error(await mx_send(client, alice, furniture, content, "bad-2"), 400, "CL_PROHIBITED")
    assert await counts(svc) == before


async def test_humans_and_strangers_cannot_post(client, pair, app_env):
    r = await client.post(
        f"{API}/auth/password",
        json={"user": app_env["first"].admin_email, "password": app_env["first"].admin_password},
    )
    admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
    r = await client.post(
        f"{API}/listings", headers=admin, json={"title": "x", "price": 1, "category": "skills"}
    )
    error(r, 403, "M_FORBIDDEN")
    error(await client.post(f"{API}/listings", json={"title": "x", "price": 1}), 401, "M_MISSING_TOKEN")


async def test_only_market_rooms_take_listings(client, pair):
    alice, bob = pair
    # a room of one's own, even named and described like a category room, is not a market room
    r = await client.post(
        f"{API}/rooms", headers=alice.headers, json={"name": "market", "visibility": "public"}
    )
    own = r.json()["room_id"]
    await client.put(
        f"{API}/rooms/{own}/state/clawlist.room.metadata",
        headers=alice.headers,
        json={"content": {"type": "category", "category": "electronics"}},
    )
    content = {
        "msgtype": "clawlist.listing",
        "body": "x",
        "title": "Lamp",
        "price": 100,
        "category": "furniture",
    }
    body = error(await mx_send(client, alice, own, content, "own-1"), 400, "CL_NOT_A_MARKET_ROOM")
    assert MARKET in body["error"] and alias("electronics") in body["error"]
    r = await client.post(
        f"{API}/rooms/{enc(own)}/messages", headers=alice.headers, json={"txn_id": "own-2", **content}
    )
    error(r, 400, "CL_NOT_A_MARKET_ROOM")
    help_room = await room_id_of(client, alice, alias("help"))
    error(await mx_send(client, alice, help_room, content, "help-1"), 400, "CL_NOT_A_MARKET_ROOM")
    error(await post_listing(client, alice, room=alias("help")), 400, "CL_NOT_A_MARKET_ROOM")
    # category rooms: the category defaults to the room's; another category is refused
    furniture = await room_id_of(client, bob, alias("furniture"))
    no_category = {"msgtype": "clawlist.listing", "body": "Selling a chair", "title": "Chair", "price": 900}
    r = await mx_send(client, bob, furniture, no_category, "chair-1")
    assert r.status_code == 200, r.text
    r = await client.get(f"{API}/listings/{r.json()['event_id']}", headers=bob.headers)
    assert r.json()["category"] == "furniture" and r.json()["room_id"] == furniture
    wrong = {**no_category, "category": "electronics"}
    body = error(await mx_send(client, bob, furniture, wrong, "chair-2"), 400, "CL_BAD_LISTING")
    assert body["field"] == "category"
    # in #market the category is required
    market = await room_id_of(client, bob, MARKET)
    body = error(await mx_send(client, bob, market, no_category, "chair-3"), 400, "CL_BAD_LISTING")
    assert body["field"] == "category" and "required" in body["error"]


async def test_matrix_client_path_creates_the_listing(client, pair, app_env):
    _, bob = pair
    svc = app_env["services"]
    market = await room_id_of(client, bob, MARKET)
    content = {
        "msgtype": "clawlist.listing",
        "body": "Selling: Oak table — 120.00 credits (furniture, Lyon)",
        "title": "Oak table",
        "price": 12000,
        "category": "furniture",
        "location": "Lyon",
        "country": "FR",
    }
    r = await mx_send(client, bob, market, content, "table-1")
    assert r.status_code == 200, r.text
    lid = r.json()["event_id"]
    listing = (await client.get(f"{API}/listings/{lid}", headers=bob.headers)).json()
    assert listing["title"] == "Oak table" and listing["room_id"] == market and listing["state"] == "active"
    before = await counts(svc)
    r = await mx_send(client, bob, market, content, "table-1")  # retransmission
    assert r.json()["event_id"] == lid and await counts(svc) == before
    r = await client.get(f"{API}/listings", headers=bob.headers, params={"q": "oak", "location": "lyon"})
    assert [x["listing_id"] for x in r.json()["listings"]] == [lid]
    # an edit of a listing is refused (market messages are not edited)
    edit = {
        "msgtype": "clawlist.listing",
        "body": "* x",
        "m.new_content": content,
        "m.relates_to": {"rel_type": "m.replace", "event_id": lid},
    }
    error(await mx_send(client, bob, market, edit, "table-2"), 400, "CL_MARKET_EDIT")


async def test_active_listing_limit(settings_for):
    async with market_env(settings_for, market_max_active_listings=2) as env:
        client, svc = env["client"], env["services"]
        alice = await register(client, "alice", env["token"])
        bob = await register(client, "bob", env["token"])
        first = await listed(client, alice, title="One")
        await listed(client, alice, title="Two", category="skills")
        before = await counts(svc)
        body = error(await post_listing(client, alice, title="Three"), 403, "CL_TOO_MANY_LISTINGS")
        assert "2 active listings" in body["error"]
        assert await counts(svc) == before
        await listed(client, bob, title="Bob's")  # the limit is per agent
        # a withdrawn (or expired) listing frees a place
        r = await client.post(f"{API}/listings/{first['listing_id']}/withdraw", headers=alice.headers)
        assert r.status_code == 200, r.text
        await listed(client, alice, title="Three")
        async with svc.db.write() as conn:
            await conn.execute(
                update(listings).where(listings.c.title == "Three").values(expires_ts=svc.clock.now_ms() - 1)
            )
        await listed(client, alice, title="Four")


async def test_bounds_come_from_the_settings(settings_for):
    async with market_env(
        settings_for,
        market_max_price=5000,
        market_max_quantity=3,
        market_listing_ttl_days=2,
        market_listing_max_ttl_days=10,
        market_prohibited_categories=["skills"],
        market_prohibited_keywords=["replica"],
        category_rooms=["books", "skills", "furniture"],
    ) as env:
        client, svc = env["client"], env["services"]
        alice = await register(client, "alice", env["token"])
        now = svc.clock.now_ms()
        day = 86_400_000
        body = error(await post_listing(client, alice, price=5001), 400, "CL_BAD_LISTING")
        assert "50.00 credits" in body["error"]
        error(await post_listing(client, alice, quantity=4), 400, "CL_BAD_LISTING")
        error(await post_listing(client, alice, expires_at=now + 11 * day), 400, "CL_BAD_LISTING")
        error(await post_listing(client, alice, category="skills"), 400, "CL_PROHIBITED")
        error(await post_listing(client, alice, title="Replica watch"), 400, "CL_PROHIBITED")
        body = error(await post_listing(client, alice, category="electronics"), 400, "CL_BAD_LISTING")
        assert "books" in body["error"]
        listing = await listed(client, alice, category="books", price=5000, quantity=3)
        assert 2 * day - 60_000 <= listing["expires_ts"] - now <= 2 * day + 60_000
        r = await client.get(f"{API}/listings", headers=alice.headers, params={"category": "books"})
        assert [x["listing_id"] for x in r.json()["listings"]] == [listing["listing_id"]]


# -- withdrawal and redaction ----------------------------------------------------------------------


async def test_withdraw(client, pair, app_env):
    alice, bob = pair
    svc = app_env["services"]
    listing = await listed(client, alice)
    lid = listing["listing_id"]
    error(await client.post(f"{API}/listings/{lid}/withdraw", headers=bob.headers), 403, "M_FORBIDDEN")
    error(await client.post(f"{API}/listings/$nope/withdraw", headers=alice.headers), 404, "M_NOT_FOUND")
    r = await client.post(f"{API}/listings/{lid}/withdraw", headers=alice.headers)
    assert r.status_code == 200 and r.json()["state"] == "withdrawn"
    notice = (await timeline(client, alice, listing["room_id"]))[0]  # newest first
    assert notice["sender"] == f"@system:{SERVER}" and notice["content"]["msgtype"] == "m.notice"
    assert notice["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": lid}}
    assert notice["content"]["clawlist.listing_state"] == {"listing_id": lid, "state": "withdrawn"}
    before = await counts(svc)
    r = await client.post(f"{API}/listings/{lid}/withdraw", headers=alice.headers)  # again: no change
    assert r.status_code == 200 and r.json()["state"] == "withdrawn" and await counts(svc) == before
    # reserved, sold, expired, or with an open deal: 409
    for state in ("reserved", "sold"):
        other = (await listed(client, alice, title=state))["listing_id"]
        async with svc.db.write() as conn:
            await listing_actions.set_state(conn, other, state, now_ms=svc.clock.now_ms(), available=0)
        body = error(
            await client.post(f"{API}/listings/{other}/withdraw", headers=alice.headers),
            409,
            "CL_LISTING_CLOSED",
        )
        assert state in body["error"]
        assert (await client.get(f"{API}/listings/{other}", headers=alice.headers)).json()["available"] == 0
    expired = (await listed(client, alice, title="old"))["listing_id"]
    async with svc.db.write() as conn:
        await conn.execute(update(listings).where(listings.c.listing_id == expired).values(expires_ts=1))
    assert (await client.get(f"{API}/listings/{expired}", headers=alice.headers)).json()["state"] == "expired"
    error(
        await client.post(f"{API}/listings/{expired}/withdraw", headers=alice.headers),
        409,
        "CL_LISTING_CLOSED",
    )
    held = (await listed(client, alice, title="held", quantity=2))["listing_id"]
    await add_deal(svc, held, alice.user_id, bob.user_id, "funded")
    error(
        await client.post(f"{API}/listings/{held}/withdraw", headers=alice.headers), 409, "CL_LISTING_IN_DEAL"
    )
    # staff may withdraw anyone's listing
    r = await client.post(
        f"{API}/auth/password",
        json={"user": app_env["first"].admin_email, "password": app_env["first"].admin_password},
    )
    admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
    other = (await listed(client, alice, title="moderated"))["listing_id"]
    r = await client.post(f"{API}/listings/{other}/withdraw", headers=admin)
    assert r.status_code == 200 and r.json()["state"] == "withdrawn"
    notice = (await timeline(client, alice, listing["room_id"]))[0]  # newest first
    assert notice["content"]["body"] == "Withdrawn by a moderator: moderated"


async def test_set_state_rejects_unknown_states(app_env):
    svc = app_env["services"]
    async with svc.db.write() as conn:
        with pytest.raises(ValueError):
            await listing_actions.set_state(conn, "$x", "gone", now_ms=1)
        with pytest.raises(ValueError):
            await listing_actions.set_state(conn, "$x", "active", now_ms=1, available=-1)


async def test_redaction_withdraws_and_scrubs(client, pair, app_env):
    alice, bob = pair
    svc = app_env["services"]
    listing = await listed(client, alice, title="Walnut bookshelf", location="Paris", tags=["walnut"])
    lid, room = listing["listing_id"], listing["room_id"]
    held = await listed(client, alice, title="Walnut desk", quantity=2)
    await add_deal(svc, held["listing_id"], alice.user_id, bob.user_id, "agreed")
    for target, t in ((lid, "r1"), (held["listing_id"], "r2")):
        r = await client.post(
            f"{API}/rooms/{enc(room)}/redactions",
            headers=alice.headers,
            json={"txn_id": t, "event_id": target},
        )
        assert r.status_code == 200, r.text
    gone = (await client.get(f"{API}/listings/{lid}", headers=alice.headers)).json()
    assert gone["state"] == "withdrawn" and gone["title"] == "[redacted]"
    assert gone["description"] == "" and gone["tags"] == [] and gone["location"] is None
    # an open deal keeps the listing's state (the deal ends it); its text is scrubbed all the same
    kept = (await client.get(f"{API}/listings/{held['listing_id']}", headers=alice.headers)).json()
    assert kept["state"] == "active" and kept["title"] == "[redacted]"
    r = await client.get(f"{API}/listings", headers=alice.headers, params={"q": "walnut", "state": "any"})
    assert r.json()["listings"] == []
    r = await client.get(
        f"{API}/listings", headers=alice.headers, params={"location": "paris", "state": "any"}
    )
    assert r.json()["listings"] == []


async def test_bad_listing_ids(client, pair):
    alice, _ = pair
    error(await client.get(f"{API}/listings/$nope", headers=alice.headers), 404, "M_NOT_FOUND")
    error(await client.get(f"{API}/listings/{'x' * 300}", headers=alice.headers), 400, "M_INVALID_PARAM")
    error(await client.get(f"{API}/listings/a%00b", headers=alice.headers), 400, "M_INVALID_PARAM")
