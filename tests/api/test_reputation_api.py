"""Feedback and reputation through the REST API, on SQLite and PostgreSQL: who may rate a deal and
when, the feedback event in the DM, the figures, the trust score on a real database, its cache.

`MarketWorld` (also used by the dispute and profile tests) runs whole trades through the real
actions: listing, offer, acceptance, minting, funding, delivery, confirmation or dispute."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from clawlist.actions.actor import Actor, system_actor
from clawlist.actions.bootstrap import system_user_id
from clawlist.actions.market import deals, ledger, listings, offers
from clawlist.actions.services import Services
from clawlist.app import create_app
from clawlist.core.clock import FrozenClock
from clawlist.storage.tables import events, feedback
from tests.helpers import Agent, login, register

API = "/api/v1"
SERVER = "test.local"
DAY = 86_400
_seq = itertools.count()


def actor_of(agent: Agent) -> Actor:
    return Actor(principal_id=agent.user_id, kind="agent", session_id="test-session")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(r: httpx.Response, status: int, errcode: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert "errcode" in body and "error" in body, body
    if errcode is not None:
        assert body["errcode"] == errcode, body


@dataclass
class MarketWorld:
    app: Any
    client: httpx.AsyncClient
    svc: Services
    clock: FrozenClock
    reg_token: str
    admin_token: str

    async def agent(self, handle: str) -> Agent:
        return await register(self.client, handle, self.reg_token)

    async def relogin(self, *agents: Agent) -> None:
        for a in agents:
            await login(self.client, a)

    @property
    def system(self) -> Actor:
        return system_actor(system_user_id(self.svc))

    async def deal(self, buyer: Agent, seller: Agent, amount: int = 5000, title: str = "a lamp") -> str:
        """An agreed deal: the seller lists, the buyer offers the price, the seller accepts."""
        listing = await listings.create_listing(
            self.svc,
            actor_of(seller),
            {"title": title, "description": "works well", "category": "electronics", "price": amount},
        )
        offer = await offers.make_offer(self.svc, actor_of(buyer), listing["listing_id"], amount)
        deal = await offers.accept_offer(self.svc, actor_of(seller), offer["offer_id"])
        return str(deal["deal_id"])

    async def funded(self, buyer: Agent, seller: Agent, amount: int = 5000, title: str = "a lamp") -> str:
        deal_id = await self.deal(buyer, seller, amount, title)
        await ledger.mint(self.svc, self.system, buyer.user_id, amount, idem_key=f"test-{next(_seq)}")
        await deals.fund(self.svc, actor_of(buyer), deal_id)
        return deal_id

    async def completed(self, buyer: Agent, seller: Agent, amount: int = 5000, title: str = "a lamp") -> str:
        deal_id = await self.funded(buyer, seller, amount, title)
        await deals.mark_delivered(self.svc, actor_of(seller), deal_id)
        await deals.confirm(self.svc, actor_of(buyer), deal_id)
        return deal_id

    async def disputed(
        self, buyer: Agent, seller: Agent, amount: int = 5000, reason: str = "never arrived"
    ) -> str:
        deal_id = await self.funded(buyer, seller, amount)
        await deals.mark_delivered(self.svc, actor_of(seller), deal_id)
        await deals.open_dispute(self.svc, actor_of(buyer), deal_id, reason)
        return deal_id

    async def rate(self, rater: Agent, deal_id: str, rating: int, comment: str = "") -> httpx.Response:
        return await self.client.post(
            f"{API}/deals/{deal_id}/feedback",
            headers=rater.headers,
            json={"rating": rating, "comment": comment},
        )

    async def count(self, table: Any) -> int:
        async with self.svc.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def admin_token(client: httpx.AsyncClient, first: Any) -> str:
    r = await client.post(
        f"{API}/auth/password", json={"user": first.admin_email, "password": first.admin_password}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


async def open_world(settings_for: Any, **overrides: Any) -> AsyncIterator[MarketWorld]:
    clock = FrozenClock()
    values = {
        # the tests move the clock by months: tokens must outlive that
        "access_token_ttl_seconds": 400 * DAY,
        "send_rate_per_second": 1_000_000.0,
        "send_rate_burst": 1_000_000.0,
        **overrides,
    }
    app = create_app(settings_for(**values), clock=clock, announce=lambda _text: None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = app.state.first_start
            yield MarketWorld(
                app,
                client,
                app.state.services,
                clock,
                first.registration_token,
                await admin_token(client, first),
            )


@pytest.fixture
async def world(settings_for: Any) -> AsyncIterator[MarketWorld]:
    async for w in open_world(settings_for, market_trusted_min_deals=2):
        yield w


async def dm_events(w: MarketWorld, room_id: str, msgtype: str) -> list[dict[str, Any]]:
    async with w.svc.db.read() as conn:
        rows = (
            await conn.execute(
                select(events.c.content, events.c.event_id, events.c.sender).where(
                    events.c.room_id == room_id
                )
            )
        ).all()
    out = []
    for r in rows:
        content = orjson.loads(r.content)
        if content.get("msgtype") == msgtype:
            out.append({"event_id": r.event_id, "sender": r.sender, "content": content})
    return out


# -- feedback ------------------------------------------------------------------------------------------


async def test_both_parties_rate_a_completed_deal_once(world: MarketWorld) -> None:
    w = world
    alice, bob, carol = await w.agent("alice"), await w.agent("bob"), await w.agent("carol")
    deal_id = await w.completed(bob, alice, 5000)
    deal = await deals.get_deal(w.svc, actor_of(bob), deal_id)

    r = await w.rate(bob, deal_id, 1, "fast delivery, as described")
    assert r.status_code == 201, r.text
    given = r.json()
    assert given["rater"] == bob.user_id and given["ratee"] == alice.user_id
    assert given["rating"] == 1 and given["deal_amount"] == 5000
    assert given["comment"] == "fast delivery, as described"
    # the feedback event is in the deal's DM, sent by the rater, with the structured fields
    [event] = await dm_events(w, deal["room_id"], "clawlist.feedback")
    assert event["event_id"] == given["event_id"] and event["sender"] == bob.user_id
    c = event["content"]
    assert (c["deal_id"], c["rating"], c["ratee"], c["comment"]) == (
        deal_id,
        1,
        alice.user_id,
        given["comment"],
    )
    assert "fast delivery" in c["body"] and "+1" in c["body"]
    # the parties see it in their timeline
    r = await w.client.get(
        f"{API}/rooms/{deal['room_id']}/messages", headers=alice.headers, params={"dir": "b"}
    )
    assert any(e["event_id"] == given["event_id"] for e in r.json()["chunk"])

    # once each
    assert_error(await w.rate(bob, deal_id, -1, "changed my mind"), 409, "CL_FEEDBACK_EXISTS")
    r = await w.rate(alice, deal_id, 0)
    assert r.status_code == 201, r.text
    assert r.json()["ratee"] == bob.user_id and r.json()["comment"] == ""
    assert_error(await w.rate(alice, deal_id, 1), 409, "CL_FEEDBACK_EXISTS")
    # somebody else's deal does not exist for them
    assert_error(await w.rate(carol, deal_id, -1), 404, "M_NOT_FOUND")
    assert await w.count(feedback) == 2

    r = await w.client.get(f"{API}/agents/{alice.user_id}/reputation")
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["score"] == 1 and rep["positive_pct_12m"] == 100.0
    assert rep["completed_deals"] == 1 and rep["trusted"] is False  # 2 deals needed here
    assert rep["feedback"] == {"positive": 1, "neutral": 0, "negative": 0, "total": 1}
    assert rep["trust"] > 0 and rep["trust_rank"] is not None
    r = await w.client.get(f"{API}/agents/{bob.user_id}/reputation")
    assert r.json()["score"] == 0 and r.json()["positive_pct_12m"] is None
    assert r.json()["feedback"]["neutral"] == 1 and r.json()["completed_deals"] == 1
    r = await w.client.get(f"{API}/agents/{alice.user_id}/feedback")
    assert [f["comment"] for f in r.json()["feedback"]] == ["fast delivery, as described"]
    assert_error(await w.client.get(f"{API}/agents/@nobody:{SERVER}/reputation"), 404, "M_NOT_FOUND")


async def test_feedback_refusals_change_nothing(world: MarketWorld) -> None:
    w = world
    alice, bob = await w.agent("alice"), await w.agent("bob")
    done = await w.completed(bob, alice)
    agreed = await w.deal(bob, alice, 700, "a chair")
    funded = await w.funded(bob, alice, 800, "a desk")
    before = (await w.count(feedback), await w.count(events))

    for bad in (2, -2, 10):
        assert_error(await w.rate(bob, done, bad), 400, "CL_BAD_RATING")
    for bad_body in ({"rating": "1"}, {"rating": True}, {"rating": 1.0}, {}, {"rating": 1, "extra": 1}):
        r = await w.client.post(f"{API}/deals/{done}/feedback", headers=bob.headers, json=bad_body)
        assert 400 <= r.status_code < 500 and r.json()["errcode"], r.text
    long = "x" * 2001
    assert_error(await w.rate(bob, done, 1, long), 400, "CL_BAD_COMMENT")
    assert_error(await w.rate(bob, done, 1, "nul\x00"), 400, "CL_BAD_COMMENT")
    assert_error(await w.rate(bob, agreed, 1), 409, "CL_DEAL_NOT_FINISHED")
    assert_error(await w.rate(alice, funded, 1), 409, "CL_DEAL_NOT_FINISHED")
    assert_error(await w.rate(bob, "d_nonexistent", 1), 404, "M_NOT_FOUND")
    # a human (the admin) does not rate deals
    r = await w.client.post(
        f"{API}/deals/{done}/feedback", headers=bearer(w.admin_token), json={"rating": 1, "comment": ""}
    )
    assert_error(r, 403, "M_FORBIDDEN")
    r = await w.client.post(f"{API}/deals/{done}/feedback", json={"rating": 1})
    assert r.status_code == 401
    assert (await w.count(feedback), await w.count(events)) == before
    assert (await w.rate(bob, done, 1, "y" * 2000)).status_code == 201  # the longest comment


async def test_feedback_window_closes_after_the_configured_days(world: MarketWorld) -> None:
    w = world
    alice, bob = await w.agent("alice"), await w.agent("bob")
    deal_id = await w.completed(bob, alice)
    w.clock.advance(60 * DAY)  # exactly the window: still open
    assert (await w.rate(bob, deal_id, 1)).status_code == 201
    w.clock.advance(1)
    before = await w.count(feedback)
    r = await w.rate(alice, deal_id, 1)
    assert_error(r, 403, "CL_FEEDBACK_WINDOW_CLOSED")
    assert "60 days" in r.json()["error"]
    assert await w.count(feedback) == before


async def test_concurrent_feedback_on_one_deal_is_written_once(world: MarketWorld) -> None:
    w = world
    alice, bob = await w.agent("alice"), await w.agent("bob")
    deal_id = await w.completed(bob, alice)
    answers = await asyncio.gather(*[w.rate(bob, deal_id, 1, f"try {i}") for i in range(6)])
    assert sorted(a.status_code for a in answers) == [201] + [409] * 5
    assert await w.count(feedback) == 1


# -- the figures ---------------------------------------------------------------------------------------


async def test_score_percentage_badge_and_the_trust_cache(world: MarketWorld) -> None:
    w = world
    seller = await w.agent("seller")
    buyers = [await w.agent(f"buyer{i}") for i in range(3)]
    deals_done = [await w.completed(b, seller, 1000 * (i + 1), f"item {i}") for i, b in enumerate(buyers)]
    # two deals with buyer0: one more positive from the same counterparty adds nothing to the score
    extra = await w.completed(buyers[0], seller, 500, "item x")
    for b, d, rating in ((buyers[0], deals_done[0], 1), (buyers[1], deals_done[1], 1), (buyers[0], extra, 1)):
        assert (await w.rate(b, d, rating)).status_code == 201
    rep = (await w.client.get(f"{API}/agents/{seller.user_id}/reputation")).json()
    assert rep["score"] == 2 and rep["positive_pct_12m"] == 100.0
    assert rep["completed_deals"] == 4 and rep["trusted"] is True
    trust_before = rep["trust"]

    # a negative: 3 of 4 positive -> 75%, below the badge; the trust is recomputed at once
    assert (await w.rate(buyers[2], deals_done[2], -1, "broken")).status_code == 201
    rep = (await w.client.get(f"{API}/agents/{seller.user_id}/reputation")).json()
    assert rep["score"] == 1 and rep["positive_pct_12m"] == 75.0 and rep["trusted"] is False
    assert rep["feedback"] == {"positive": 3, "neutral": 0, "negative": 1, "total": 4}
    assert rep["trust"] != trust_before

    # after a year the old ratings leave the percentage (not the score)
    w.clock.advance(366 * DAY)
    rep = (await w.client.get(f"{API}/agents/{seller.user_id}/reputation")).json()
    assert rep["positive_pct_12m"] is None and rep["score"] == 1
    assert rep["feedback_12m"]["total"] == 0 and rep["feedback"]["total"] == 4

    board = (await w.client.get(f"{API}/market/leaderboard", params={"limit": 2})).json()["agents"]
    assert len(board) == 2 and board[0]["trust"] >= board[1]["trust"]
    assert_error(await w.client.get(f"{API}/market/leaderboard", params={"limit": 0}), 400)


@pytest.fixture
async def pretrusted_world(settings_for: Any) -> AsyncIterator[MarketWorld]:
    async for w in open_world(settings_for, market_pretrusted=[f"@operator:{SERVER}"]):
        yield w


async def test_a_ring_of_fresh_accounts_ranks_below_an_honest_seller(pretrusted_world: MarketWorld) -> None:
    """On a real database: the operator's account (pre-trusted) trades with two buyers, who buy from
    the honest seller; three fresh accounts trade in a circle, many times, all +1."""
    w = pretrusted_world
    operator, honest = await w.agent("operator"), await w.agent("honest")
    buyers = [await w.agent(f"buyer{i}") for i in range(2)]
    for b in buyers:
        d = await w.completed(b, operator, 3000, "operator stock")
        assert (await w.rate(b, d, 1)).status_code == 201
        assert (await w.rate(operator, d, 1)).status_code == 201
        d = await w.completed(b, honest, 5000, "honest goods")
        assert (await w.rate(b, d, 1)).status_code == 201
        assert (await w.rate(honest, d, 1)).status_code == 201
    ring = [await w.agent(f"ring{i}") for i in range(3)]
    for _round in range(2):
        for a, b in itertools.permutations(ring, 2):
            d = await w.completed(a, b, 100, "trinket")
            assert (await w.rate(a, d, 1)).status_code == 201
            assert (await w.rate(b, d, 1)).status_code == 201
    figures = {
        a.user_id: (await w.client.get(f"{API}/agents/{a.user_id}/reputation")).json()
        for a in [honest, *ring]
    }
    # by the naive numbers the ring looks as good or better ...
    assert all(figures[r.user_id]["score"] >= figures[honest.user_id]["score"] for r in ring)
    assert all(
        figures[r.user_id]["completed_deals"] > figures[honest.user_id]["completed_deals"] for r in ring
    )
    # ... but nobody trusted vouches for it
    assert figures[honest.user_id]["trust"] > 0.5
    assert all(figures[r.user_id]["trust"] == 0 for r in ring)
    assert all(figures[r.user_id]["trust_rank"] > figures[honest.user_id]["trust_rank"] for r in ring)
