"""The ledger's invariants on real databases: balanced, idempotent transfers; no balance below zero
but the mint's; the total equals what was minted; no double spend, under random sequences of deal
moves (hypothesis, SQLite) and under 50 concurrent fundings by one buyer (SQLite and PostgreSQL,
from two Services at once, as two server processes would)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from clawlist.actions.actor import Actor, system_actor
from clawlist.actions.bootstrap import system_user_id
from clawlist.actions.market import deals, ledger, offers
from clawlist.actions.services import Services, build_services, start_services, stop_services
from clawlist.actions.users import register_agent
from clawlist.app import create_app
from clawlist.core.errors import ClawlistError
from clawlist.core.money import fee_for
from clawlist.settings import Settings
from clawlist.storage.event_writer import WriteTx
from clawlist.storage.tables import ledger_entries, ledger_transfers
from tests.api.test_deals_api import insert_listing, ledger_invariants
from tests.helpers import new_keypair


async def make_agent(svc: Services, handle: str) -> Actor:
    _key, public = new_keypair()
    record = await register_agent(svc, handle=handle, public_key=public, skip_policy=True)
    return Actor(principal_id=record.user_id, kind="agent", session_id=f"s-{handle}")


@pytest.fixture
async def market(settings_for: Any) -> AsyncIterator[Services]:
    """A started server (no HTTP) on the test's backend; the scheduler stays out of the way."""
    app = create_app(settings_for(market_scheduler_interval_seconds=3600), announce=lambda _text: None)
    async with app.router.lifespan_context(app):
        yield app.state.services


async def post(svc: Services, **kwargs: Any) -> str:
    async def op(tx: WriteTx) -> str:
        return await ledger.post_transfer(tx.conn, now_ms=tx.now_ms(), created_by="test", **kwargs)

    return await svc.writer.run(op)


# -- post_transfer -------------------------------------------------------------------------------


async def test_transfers_are_balanced_idempotent_and_never_overdraw(market: Services) -> None:
    svc = market
    a, b = ledger.wallet("@a:test.local"), ledger.wallet("@b:test.local")
    first = await post(svc, idem_key="m1", kind="mint", entries=[(ledger.MINT, -1000), (a, 1000)])
    # the same key again writes nothing and answers the same id
    assert await post(svc, idem_key="m1", kind="mint", entries=[(ledger.MINT, -1000), (a, 1000)]) == first
    # ... but not for different entries
    with pytest.raises(ClawlistError) as err:
        await post(svc, idem_key="m1", kind="mint", entries=[(ledger.MINT, -5), (a, 5)])
    assert err.value.errcode == "CL_IDEM_KEY_REUSED"
    # unbalanced or empty transfers are programming errors
    for entries in ([(a, -10), (b, 9)], [(a, 0)], []):
        with pytest.raises(ValueError):
            await post(svc, idem_key="bad", kind="transfer", entries=entries)
    # overdraft: 409 with the numbers, and nothing is written
    with pytest.raises(ClawlistError) as err:
        await post(svc, idem_key="t1", kind="transfer", entries=[(a, -1001), (b, 1001)])
    assert (err.value.status, err.value.errcode) == (409, "CL_INSUFFICIENT_FUNDS")
    assert err.value.extra == {"account": a, "balance": 1000, "needed": 1001}
    await post(svc, idem_key="t2", kind="transfer", entries=[(a, -600), (b, 400), (ledger.FEES, 200)])
    assert await ledger.balance(svc, "@a:test.local") == 400
    assert await ledger.balance(svc, "@b:test.local") == 400
    async with svc.db.read() as conn:
        transfers = (await conn.execute(select(func.count()).select_from(ledger_transfers))).scalar_one()
        entries_n = (await conn.execute(select(func.count()).select_from(ledger_entries))).scalar_one()
    assert (transfers, entries_n) == (2, 5)
    balances = await ledger_invariants(svc)
    assert balances == {ledger.MINT: -1000, a: 400, b: 400, ledger.FEES: 200}


async def test_mint_is_for_admins_and_idempotent(market: Services) -> None:
    svc = market
    alice = await make_agent(svc, "alice")
    system = system_actor(system_user_id(svc))
    with pytest.raises(ClawlistError) as err:
        await ledger.mint(svc, alice, alice.principal_id, 100, idem_key="k")
    assert err.value.status == 403
    moderator = Actor(principal_id="h_mod", kind="human", session_id="s", role="moderator")
    with pytest.raises(ClawlistError):
        await ledger.mint(svc, moderator, alice.principal_id, 100, idem_key="k")
    t1 = await ledger.mint(svc, system, "alice", 100, idem_key="k", memo="hello")
    assert await ledger.mint(svc, system, alice.principal_id, 100, idem_key="k") == t1
    assert await ledger.balance(svc, alice.principal_id) == 100
    [entry] = await ledger.statement(svc, alice.principal_id)
    assert (entry["kind"], entry["amount"], entry["balance"], entry["memo"]) == ("mint", 100, 100, "hello")


# -- 50 concurrent fundings by one buyer ---------------------------------------------------------


async def test_fifty_concurrent_fundings_by_one_buyer(market: Services) -> None:
    svc = market
    seller, buyer = await make_agent(svc, "seller"), await make_agent(svc, "buyer")
    listing_id = await insert_listing(svc, seller.principal_id, price=100, quantity=50)
    deal_ids = []
    for _ in range(50):
        offer = await offers.make_offer(svc, buyer, listing_id, 100)
        deal_ids.append((await offers.accept_offer(svc, seller, offer["offer_id"]))["deal_id"])
    system = system_actor(system_user_id(svc))
    await ledger.mint(svc, system, buyer.principal_id, 2350, idem_key="budget")

    # A second Services on the same database: another "process" with its own writer.
    other = build_services(svc.settings)
    await start_services(other, run_migrations=False)
    try:
        calls = [deals.fund(svc if i % 2 else other, buyer, d) for i, d in enumerate(deal_ids)]
        # and every deal a second time: a double spend attempt
        calls += [deals.fund(other if i % 2 else svc, buyer, d) for i, d in enumerate(deal_ids)]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await stop_services(other)
    funded = [r for r in results if isinstance(r, dict)]
    errors = [r for r in results if not isinstance(r, dict)]
    assert all(isinstance(e, ClawlistError) for e in errors), errors
    assert len(funded) == 23  # 23 * 100 <= 2350 < 24 * 100
    assert len({d["deal_id"] for d in funded}) == 23
    codes = sorted({e.errcode for e in errors if isinstance(e, ClawlistError)})
    assert set(codes) <= {"CL_INSUFFICIENT_FUNDS", "CL_ILLEGAL_TRANSITION"}
    assert "CL_INSUFFICIENT_FUNDS" in codes
    assert await ledger.balance(svc, buyer.principal_id) == 50
    balances = await ledger_invariants(svc)
    for deal_id in deal_ids:
        state = (await deals.get_deal(svc, buyer, deal_id))["state"]
        held = balances.get(ledger.escrow(deal_id), 0)
        assert (state, held) in (("funded", 100), ("agreed", 0)), (deal_id, state, held)
    # one fund per funded deal, never two
    async with svc.db.read() as conn:
        holds = (
            await conn.execute(
                select(func.count()).select_from(ledger_transfers).where(ledger_transfers.c.kind == "hold")
            )
        ).scalar_one()
    assert holds == 23


# -- random sequences (hypothesis) on SQLite -----------------------------------------------------


@pytest.fixture
async def sqlite_market(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    settings_ = Settings(
        data_dir=tmp_path / "data", server_name="test.local", market_scheduler_interval_seconds=3600
    )
    app = create_app(settings_, announce=lambda _text: None)
    async with app.router.lifespan_context(app):
        svc: Services = app.state.services
        agents = [await make_agent(svc, f"agent{i}") for i in range(3)]
        yield {"svc": svc, "agents": agents, "listings": {}, "examples": 0}


AGENT = st.integers(0, 2)
DEAL = st.integers(0, 30)
OPS = st.one_of(
    st.tuples(st.just("mint"), AGENT, st.integers(1, 8000)),
    st.tuples(st.just("open"), AGENT, AGENT, st.integers(1, 3000)),
    st.tuples(st.sampled_from(["fund", "deliver", "confirm", "cancel", "dispute"]), DEAL, st.booleans()),
    st.tuples(st.just("resolve"), DEAL, st.sampled_from(["refund", "release", "split"]), st.integers(0, 100)),
    # a legal next move of the deal's state, picked by the integer (reaches every transition)
    st.tuples(st.just("advance"), DEAL, st.integers(0, 11)),
    st.tuples(st.just("advance"), DEAL, st.integers(0, 11)),
)
#: state -> the moves `advance` chooses from: (op kind, by the buyer?, resolve outcome)
NEXT_MOVES: dict[str, list[tuple[str, bool, str]]] = {
    "agreed": [("fund", True, ""), ("fund", True, ""), ("cancel", False, ""), ("fund", True, "")],
    "funded": [("deliver", False, ""), ("cancel", True, ""), ("cancel", False, ""), ("dispute", True, "")],
    "delivered": [
        ("confirm", True, ""),
        ("dispute", False, ""),
        ("confirm", True, ""),
        ("dispute", True, ""),
    ],
    "disputed": [("resolve", False, "refund"), ("resolve", False, "release"), ("resolve", False, "split")],
}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    opening=st.lists(st.tuples(st.just("open"), AGENT, AGENT, st.integers(1, 3000)), min_size=1, max_size=5),
    ops=st.lists(OPS, min_size=5, max_size=40),
)
async def test_random_deal_sequences_keep_the_ledger_sound(
    sqlite_market: dict[str, Any], opening: list[Any], ops: list[Any]
) -> None:
    env = sqlite_market
    svc: Services = env["svc"]
    agents: list[Actor] = env["agents"]
    system = system_actor(system_user_id(svc))
    bps = svc.settings.market_fee_bps
    env["examples"] += 1
    # the model: wallets as they should be, starting from the database's state
    wallet = {a.principal_id: await ledger.balance(svc, a.principal_id) for a in agents}
    deal_list: list[dict[str, Any]] = []

    async def listing_of(seller: Actor) -> str:
        listing_id = env["listings"].get(seller.principal_id)
        if listing_id is None:
            listing_id = await insert_listing(
                svc, seller.principal_id, price=100, quantity=1_000_000, ttl_s=10**8
            )
            env["listings"][seller.principal_id] = listing_id
        return str(listing_id)

    for step, op in enumerate(opening + ops):
        kind = op[0]
        if kind == "mint":
            _, who, amount = op
            await ledger.mint(
                svc, system, agents[who].principal_id, amount, idem_key=f"e{env['examples']}-{step}"
            )
            wallet[agents[who].principal_id] += amount
            continue
        if kind == "open":
            _, b, s, amount = op
            if b == s:
                s = (b + 1) % len(agents)
            offer = await offers.make_offer(svc, agents[b], await listing_of(agents[s]), amount)
            deal_list.append(await offers.accept_offer(svc, agents[s], offer["offer_id"]))
            continue
        if not deal_list:
            continue
        deal = deal_list[op[1] % len(deal_list)]
        if kind == "advance":
            choices = NEXT_MOVES.get(deal["state"])
            if not choices:
                continue
            move_kind, by_buyer, outcome_ = choices[op[2] % len(choices)]
            op = (
                (move_kind, op[1], outcome_, op[2] * 9)
                if move_kind == "resolve"
                else (move_kind, op[1], by_buyer)
            )
            kind = op[0]
        buyer = next(a for a in agents if a.principal_id == deal["buyer"])
        seller = next(a for a in agents if a.principal_id == deal["seller"])
        amount = int(deal["amount"])
        before = await ledger_invariants(svc)
        try:
            if kind == "resolve":
                _, _, outcome, pct = op
                split = max(1, min(amount - 1, amount * pct // 100))
                new = await deals.resolve(
                    svc,
                    system,
                    deal["deal_id"],
                    outcome,
                    buyer_amount=split if outcome == "split" else None,
                    decision="d",
                )
            else:
                actor = buyer if op[2] else seller
                move = {
                    "fund": deals.fund,
                    "deliver": deals.mark_delivered,
                    "confirm": deals.confirm,
                    "cancel": deals.cancel,
                }.get(kind)
                if move is not None:
                    new = await move(svc, actor, deal["deal_id"])
                else:
                    new = await deals.open_dispute(svc, actor, deal["deal_id"], "reason")
        except ClawlistError as exc:
            event(f"refused {kind}: {exc.errcode}")
            # a refusal changes nothing at all
            assert await ledger_invariants(svc) == before
            if exc.errcode == "CL_INSUFFICIENT_FUNDS":
                assert kind == "fund" and wallet[deal["buyer"]] < amount
            elif kind == "fund" and deal["state"] == "agreed" and op[2]:
                raise AssertionError(f"a funding the model allows was refused: {exc!r}") from exc
            continue
        event(f"{kind} -> {new['state']}")
        # the money the model expects
        if kind == "fund":
            assert wallet[deal["buyer"]] >= amount
            wallet[deal["buyer"]] -= amount
        elif new["state"] == "completed":
            wallet[deal["seller"]] += amount - fee_for(amount, bps)
        elif kind == "cancel" and new["state"] == "cancelled" and deal["state"] == "funded":
            wallet[deal["buyer"]] += amount
        elif kind == "resolve":
            to_buyer = new["decision"]["buyer_amount"]
            wallet[deal["buyer"]] += to_buyer
            wallet[deal["seller"]] += (amount - to_buyer) - fee_for(amount - to_buyer, bps)
        deal.update(state=new["state"])
    balances = await ledger_invariants(svc)
    for a in agents:
        assert balances.get(ledger.wallet(a.principal_id), 0) == wallet[a.principal_id]
    # escrow holds exactly the price of every funded, unfinished deal, and nothing otherwise
    for deal in deal_list:
        fresh = await deals.get_deal(svc, system, deal["deal_id"])
        held = balances.get(ledger.escrow(deal["deal_id"]), 0)
        assert held == (int(deal["amount"]) if fresh["state"] in ("funded", "delivered", "disputed") else 0)
