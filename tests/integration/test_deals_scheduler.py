"""The market scheduler with a clock the test moves: funding timeouts, auto-confirmation, offer and
listing expiry; it works from the tables, so a restart loses nothing. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select

from clawlist.actions.actor import Actor, system_actor
from clawlist.actions.bootstrap import system_user_id
from clawlist.actions.market import deals, ledger, offers, scheduler
from clawlist.actions.services import Services
from clawlist.app import create_app
from clawlist.core.clock import FrozenClock
from clawlist.core.errors import ClawlistError
from clawlist.storage.tables import events, listings
from clawlist.storage.tables import offers as offers_table
from tests.api.test_deals_api import insert_listing, ledger_invariants
from tests.integration.test_ledger_invariants import make_agent

HOUR, DAY = 3600, 86_400


@asynccontextmanager
async def running(settings: Any, clock: FrozenClock) -> AsyncIterator[Services]:
    app = create_app(settings, clock=clock, announce=lambda _text: None)
    async with app.router.lifespan_context(app):
        svc: Services = app.state.services
        assert svc.market_scheduler is not None
        await wait_for(lambda: svc.market_scheduler is not None and svc.market_scheduler.passes >= 1)
        yield svc


async def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def listing_row(svc: Services, listing_id: str) -> Any:
    async with svc.db.read() as conn:
        return (await conn.execute(select(listings).where(listings.c.listing_id == listing_id))).first()


async def offer_state(svc: Services, offer_id: str) -> str:
    async with svc.db.read() as conn:
        return str(
            (
                await conn.execute(select(offers_table.c.state).where(offers_table.c.offer_id == offer_id))
            ).scalar()
        )


async def deal_of(svc: Services, seller: Actor, buyer: Actor, listing_id: str, amount: int) -> str:
    offer = await offers.make_offer(svc, buyer, listing_id, amount)
    return str((await offers.accept_offer(svc, seller, offer["offer_id"]))["deal_id"])


async def test_timeouts_and_expiries_survive_a_restart(settings_for: Any) -> None:
    settings = settings_for(market_scheduler_interval_seconds=3600)
    clock = FrozenClock()
    async with running(settings, clock) as svc:
        seller, buyer = await make_agent(svc, "seller"), await make_agent(svc, "buyer")
        system = system_actor(system_user_id(svc))
        await ledger.mint(svc, system, buyer.principal_id, 10_000, idem_key="budget")
        shop = await insert_listing(svc, seller.principal_id, quantity=3, ttl_s=10 * DAY)
        lone = await insert_listing(svc, seller.principal_id, ttl_s=HOUR)
        held = await insert_listing(svc, seller.principal_id, ttl_s=HOUR)
        unfunded = await deal_of(svc, seller, buyer, shop, 1000)
        delivered = await deal_of(svc, seller, buyer, shop, 2000)
        await deals.fund(svc, buyer, delivered)
        await deals.mark_delivered(svc, seller, delivered)
        holding = await deal_of(svc, seller, buyer, held, 500)
        pending_offer = (await offers.make_offer(svc, buyer, shop, 900))["offer_id"]
        assert await scheduler.run_due(svc) == {
            "offers_expired": 0,
            "deals_expired": 0,
            "deals_auto_confirmed": 0,
            "listings_expired": 0,
        }

        # two hours on: the lone listing expires; the held one waits for its deal
        clock.advance(2 * HOUR)
        assert (await scheduler.run_due(svc))["listings_expired"] == 1
        assert (await listing_row(svc, lone)).state == "expired"
        assert (await listing_row(svc, held)).state == "reserved"
        # a listing past its expiry takes no offers, even before the scheduler marks it
        other = await make_agent(svc, "other")
        try:
            await offers.make_offer(svc, other, held, 100)
        except ClawlistError as exc:
            assert exc.errcode == "CL_LISTING_UNAVAILABLE"
        else:
            raise AssertionError("an offer on an expired listing was accepted")

    # the server restarts; one day later (past the funding deadline) the new process finds the work
    async with running(settings, clock) as svc:
        clock.advance(DAY)
        assert await scheduler.run_due(svc) == {
            "offers_expired": 0,
            "deals_expired": 2,
            "deals_auto_confirmed": 0,
            "listings_expired": 1,
        }
        assert (await deals.get_deal(svc, buyer, unfunded))["state"] == "cancelled"
        assert (await deals.get_deal(svc, buyer, holding))["state"] == "cancelled"
        assert (await listing_row(svc, held)).state == "expired"
        assert (await listing_row(svc, shop)).available == 2  # one unit back, one still in the delivered deal
        full = await deals.get_deal(svc, seller, unfunded)
        assert full["transitions"][-1]["actor"] == system.principal_id
        assert full["transitions"][-1]["note"] == "expire"
        async with svc.db.read() as conn:
            row = (
                await conn.execute(
                    select(events.c.sender).where(events.c.event_id == full["transitions"][-1]["event_id"])
                )
            ).first()
        assert row.sender == system.principal_id

        # three days after delivery: auto-confirmed, the seller is paid; the open offer lapsed too
        clock.advance(2 * DAY)
        assert await scheduler.run_due(svc) == {
            "offers_expired": 1,
            "deals_expired": 0,
            "deals_auto_confirmed": 1,
            "listings_expired": 0,
        }
        done = await deals.get_deal(svc, seller, delivered)
        assert done["state"] == "completed" and done["fee"] == 50
        assert await ledger.balance(svc, seller.principal_id) == 1950
        assert await ledger.balance(svc, buyer.principal_id) == 8000
        assert await offer_state(svc, pending_offer) == "expired"
        assert (await listing_row(svc, shop)).state == "active"
        # nothing is done twice
        assert sum((await scheduler.run_due(svc)).values()) == 0
        await ledger_invariants(svc)


async def test_the_background_loop_runs_by_itself(settings_for: Any) -> None:
    clock = FrozenClock()
    async with running(settings_for(market_scheduler_interval_seconds=0.05), clock) as svc:
        seller, buyer = await make_agent(svc, "seller"), await make_agent(svc, "buyer")
        listing_id = await insert_listing(svc, seller.principal_id, ttl_s=10 * DAY)
        deal_id = await deal_of(svc, seller, buyer, listing_id, 1000)
        clock.advance(svc.settings.market_funding_timeout_seconds + 1)
        states: list[str] = []

        async def poll() -> None:
            for _ in range(500):
                states.append((await deals.get_deal(svc, buyer, deal_id))["state"])
                if states[-1] == "cancelled":
                    return
                await asyncio.sleep(0.02)

        await poll()
        assert states[-1] == "cancelled"
        assert (await listing_row(svc, listing_id)).state == "active"


async def test_deadlines_are_kept_whenever_the_pass_runs(settings_for: Any) -> None:
    """Past a deadline the parties' competing move is refused, before the scheduler has even run;
    a move racing the pass happens once, by whoever comes first."""
    clock = FrozenClock()
    async with running(settings_for(market_scheduler_interval_seconds=3600), clock) as svc:
        seller, buyer = await make_agent(svc, "seller"), await make_agent(svc, "buyer")
        await ledger.mint(svc, system_actor(system_user_id(svc)), buyer.principal_id, 5000, idem_key="b")
        listing_id = await insert_listing(svc, seller.principal_id, quantity=3, ttl_s=10 * DAY)
        late = await deal_of(svc, seller, buyer, listing_id, 1000)
        racing = await deal_of(svc, seller, buyer, listing_id, 1000)
        slow = await deal_of(svc, seller, buyer, listing_id, 1000)
        await deals.fund(svc, buyer, slow)
        await deals.mark_delivered(svc, seller, slow)
        clock.advance(svc.settings.market_auto_confirm_seconds + 1)  # past both deadlines
        for call in (deals.fund(svc, buyer, late), deals.open_dispute(svc, buyer, slow, "late")):
            try:
                await call
            except ClawlistError as exc:
                assert exc.errcode == "CL_DEADLINE_PASSED"
            else:
                raise AssertionError("a move past its deadline was accepted")
        # a party cancelling while the pass expires the same deal: one cancellation, not two
        cancelled, result = await asyncio.gather(
            deals.cancel(svc, seller, racing), scheduler.run_due(svc), return_exceptions=True
        )
        assert isinstance(result, dict)
        if isinstance(cancelled, ClawlistError):
            assert cancelled.errcode == "CL_ILLEGAL_TRANSITION" and result["deals_expired"] == 2
        else:
            assert isinstance(cancelled, dict) and result["deals_expired"] == 1
        assert result["deals_auto_confirmed"] == 1
        steps = (await deals.get_deal(svc, buyer, racing))["transitions"]
        assert [t["to_state"] for t in steps] == ["agreed", "cancelled"]
        assert (await listing_row(svc, listing_id)).available == 2  # two units back, one sold
        await ledger_invariants(svc)
