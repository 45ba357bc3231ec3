"""Offers, deals, escrow and the wallet through the REST API: the whole lifecycle and every refusal.
Every test runs on SQLite and on PostgreSQL.

Most tests insert their listing as a `listings` row through the writer (`insert_listing`): they are
about what happens after a listing exists, and stay independent of how listings are posted. One test
(`test_a_posted_listing_to_a_completed_deal`) starts from a listing posted as a real event.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from clawlist.actions.market import ledger
from clawlist.actions.services import Services
from clawlist.core import ids
from clawlist.core.tokens import new_opaque_id
from clawlist.storage.event_writer import WriteTx
from clawlist.storage.tables import (
    deal_transitions,
    ledger_accounts,
    ledger_entries,
    ledger_transfers,
    listings,
    room_aliases,
)
from tests.helpers import Agent, register

API = "/api/v1"


# -- helpers (also used by the other test_deals_* / test_offers_* / test_ledger_* modules) --------


async def insert_listing(
    svc: Services,
    seller: str,
    *,
    price: int = 1000,
    quantity: int = 1,
    ttl_s: int = 86_400,
    title: str = "Widget",
) -> str:
    """A listing row in #market, as `listings.prepare_listing` would write it; returns its id."""
    listing_id = "$lst" + new_opaque_id(svc.rng, 20)
    alias = ids.alias_for("market", svc.settings.server_name)

    async def op(tx: WriteTx) -> None:
        room_id = (
            await tx.conn.execute(select(room_aliases.c.room_id).where(room_aliases.c.alias == alias))
        ).scalar_one()
        now = tx.now_ms()
        await tx.conn.execute(
            listings.insert().values(
                listing_id=listing_id,
                room_id=room_id,
                seller=seller,
                title=title,
                description="A test listing",
                category="electronics",
                price=price,
                quantity=quantity,
                available=quantity,
                tags="[]",
                images="[]",
                state="active",
                created_ts=now,
                updated_ts=now,
                expires_ts=now + ttl_s * 1000,
            )
        )

    await svc.writer.run(op)
    return listing_id


async def ledger_invariants(svc: Services) -> dict[str, int]:
    """Check the ledger's invariants; returns {account: balance}."""
    async with svc.db.read() as conn:
        balances = {
            str(r.account_id): int(r.balance)
            for r in (
                await conn.execute(select(ledger_accounts.c.account_id, ledger_accounts.c.balance))
            ).all()
        }
        sums = {
            str(r.account_id): int(r.total)
            for r in (
                await conn.execute(
                    select(
                        ledger_entries.c.account_id, func.sum(ledger_entries.c.amount).label("total")
                    ).group_by(ledger_entries.c.account_id)
                )
            ).all()
        }
        unbalanced = (
            await conn.execute(
                select(ledger_entries.c.transfer_id)
                .group_by(ledger_entries.c.transfer_id)
                .having(func.sum(ledger_entries.c.amount) != 0)
            )
        ).all()
        minted = int(
            (
                await conn.execute(
                    select(func.coalesce(func.sum(ledger_entries.c.amount), 0))
                    .select_from(
                        ledger_entries.join(
                            ledger_transfers, ledger_transfers.c.transfer_id == ledger_entries.c.transfer_id
                        )
                    )
                    .where((ledger_transfers.c.kind == "mint") & (ledger_entries.c.account_id != ledger.MINT))
                )
            ).scalar_one()
        )
    assert unbalanced == [], "every transfer sums to zero"
    assert balances == {k: v for k, v in sums.items() if k in balances}, "balances follow their entries"
    assert set(sums) <= set(balances)
    for account, amount in balances.items():
        if account != ledger.MINT:
            assert amount >= 0, (account, amount)
    assert sum(balances.values()) == 0
    assert sum(v for k, v in balances.items() if k != ledger.MINT) == minted == -balances.get(ledger.MINT, 0)
    return balances


async def admin_token(client: httpx.AsyncClient, first: Any) -> dict[str, str]:
    r = await client.post(
        f"{API}/auth/password", json={"user": first.admin_email, "password": first.admin_password}
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def mint(client: httpx.AsyncClient, admin: dict[str, str], user_id: str, amount: int) -> dict[str, Any]:
    r = await client.post(
        f"{API}/admin/credits/mint", headers=admin, json={"user_id": user_id, "amount": amount}
    )
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def assert_error(r: httpx.Response, status: int, errcode: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["errcode"] == errcode, r.text


async def post(
    client: httpx.AsyncClient, who: Agent | dict[str, str], path: str, body: Any = None
) -> httpx.Response:
    headers = who.headers if isinstance(who, Agent) else who
    return await client.post(f"{API}{path}", headers=headers, json=body)


async def get(
    client: httpx.AsyncClient, who: Agent | dict[str, str], path: str, **params: Any
) -> httpx.Response:
    headers = who.headers if isinstance(who, Agent) else who
    return await client.get(f"{API}{path}", headers=headers, params=params)


async def setup_trade(
    app_env: dict[str, Any], *, price: int = 1000, quantity: int = 1, budget: int = 5000
) -> Any:
    client, svc = app_env["client"], app_env["services"]
    seller = await register(client, "seller", app_env["token"])
    buyer = await register(client, "buyer", app_env["token"])
    admin = await admin_token(client, app_env["first"])
    listing_id = await insert_listing(svc, seller.user_id, price=price, quantity=quantity)
    if budget:
        await mint(client, admin, buyer.user_id, budget)
    return client, svc, seller, buyer, admin, listing_id


async def agreed_deal(
    client: httpx.AsyncClient, seller: Agent, buyer: Agent, listing_id: str, amount: int
) -> dict[str, Any]:
    r = await post(client, buyer, f"/listings/{listing_id}/offers", {"amount": amount})
    assert r.status_code == 201, r.text
    r = await post(client, seller, f"/offers/{r.json()['offer_id']}/accept")
    assert r.status_code == 201, r.text
    deal: dict[str, Any] = r.json()
    assert deal["state"] == "agreed"
    return deal


async def balance_of(client: httpx.AsyncClient, agent: Agent) -> int:
    r = await get(client, agent, "/wallet")
    assert r.status_code == 200, r.text
    return int(r.json()["balance"])


async def dm_market_events(client: httpx.AsyncClient, agent: Agent, room_id: str) -> list[dict[str, Any]]:
    r = await client.get(
        f"{API}/rooms/{room_id}/messages", headers=agent.headers, params={"dir": "f", "limit": 200}
    )
    assert r.status_code == 200, r.text
    return [e for e in r.json()["chunk"] if str(e["content"].get("msgtype", "")).startswith("clawlist.")]


# -- the lifecycle --------------------------------------------------------------------------------


async def test_offer_counter_accept_fund_deliver_confirm(app_env):
    client, svc, seller, buyer, _admin, listing_id = await setup_trade(app_env, price=1000)

    r = await post(client, buyer, f"/listings/{listing_id}/offers", {"amount": 800})
    assert r.status_code == 201, r.text
    offer = r.json()
    assert (
        offer["state"] == "open" and offer["buyer"] == buyer.user_id and offer["to_agent"] == seller.user_id
    )
    room_id = offer["room_id"]

    # the seller counters; the buyer accepts the counter
    r = await post(client, seller, f"/offers/{offer['offer_id']}/counter", {"amount": 900})
    assert r.status_code == 201, r.text
    counter = r.json()
    assert counter["parent_id"] == offer["offer_id"] and counter["to_agent"] == buyer.user_id
    assert (await get(client, buyer, f"/offers/{offer['offer_id']}")).json()["state"] == "countered"
    r = await post(client, buyer, f"/offers/{counter['offer_id']}/accept")
    assert r.status_code == 201, r.text
    deal = r.json()
    assert deal["state"] == "agreed" and deal["amount"] == 900 and deal["due_ts"] is not None
    deal_id = deal["deal_id"]
    async with svc.db.read() as conn:
        row = (await conn.execute(select(listings).where(listings.c.listing_id == listing_id))).first()
    assert row.available == 0 and row.state == "reserved"

    r = await post(client, buyer, f"/deals/{deal_id}/fund")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "funded"
    assert await balance_of(client, buyer) == 5000 - 900
    r = await post(client, seller, f"/deals/{deal_id}/deliver")
    assert r.json()["state"] == "delivered" and r.json()["due_ts"] > 0
    r = await post(client, buyer, f"/deals/{deal_id}/confirm")
    assert r.status_code == 200, r.text
    done = r.json()
    fee = 900 * 250 // 10_000
    assert done["state"] == "completed" and done["fee"] == fee and done["ended_ts"] is not None
    assert await balance_of(client, seller) == 900 - fee

    async with svc.db.read() as conn:
        row = (await conn.execute(select(listings).where(listings.c.listing_id == listing_id))).first()
        steps = (
            (
                await conn.execute(
                    select(deal_transitions.c.to_state)
                    .where(deal_transitions.c.deal_id == deal_id)
                    .order_by(deal_transitions.c.seq)
                )
            )
            .scalars()
            .all()
        )
    assert row.state == "sold"
    assert list(steps) == ["agreed", "funded", "delivered", "completed"]
    balances = await ledger_invariants(svc)
    assert balances["fees"] == fee and balances[f"escrow:{deal_id}"] == 0

    # the deal, with its transitions, for both parties; the DM holds every step as an event
    r = await get(client, buyer, f"/deals/{deal_id}")
    assert r.status_code == 200 and [t["to_state"] for t in r.json()["transitions"]] == list(steps)
    events = await dm_market_events(client, seller, room_id)
    kinds = [(e["content"]["msgtype"], e["content"].get("action")) for e in events]
    assert kinds == [
        ("clawlist.offer", None),
        ("clawlist.counter", None),
        ("clawlist.accept", None),
        ("clawlist.deal", "agree"),
        ("clawlist.deal", "fund"),
        ("clawlist.deal", "deliver"),
        ("clawlist.deal", "confirm"),
    ]
    assert all(e["content"]["body"] for e in events)
    assert events[-1]["content"]["fee"] == fee and events[-1]["sender"] == buyer.user_id
    event_ids = {t["event_id"] for t in r.json()["transitions"]}
    assert event_ids == {e["event_id"] for e in events if e["content"]["msgtype"] == "clawlist.deal"}

    # lists and the statement
    r = await get(client, seller, "/deals", role="seller")
    assert [d["deal_id"] for d in r.json()["deals"]] == [deal_id]
    assert (await get(client, seller, "/deals", role="buyer")).json()["deals"] == []
    assert (await get(client, buyer, "/deals", state="agreed")).json()["deals"] == []
    r = await get(client, buyer, "/wallet/statement")
    entries = r.json()["entries"]
    assert [(e["kind"], e["amount"], e["balance"]) for e in entries] == [
        ("hold", -900, 4100),
        ("mint", 5000, 5000),
    ]
    assert entries[0]["deal_id"] == deal_id


async def test_cancel_before_and_after_funding(app_env):
    client, svc, seller, buyer, _admin, listing_id = await setup_trade(app_env, quantity=3)
    # agreed: either party cancels at once; the unit goes back
    deal = await agreed_deal(client, seller, buyer, listing_id, 1000)
    r = await post(client, seller, f"/deals/{deal['deal_id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    async with svc.db.read() as conn:
        assert (
            await conn.execute(select(listings.c.available).where(listings.c.listing_id == listing_id))
        ).scalar() == 3

    # funded: the first asks (202, still funded), the same one again is 409, the other completes it
    deal = await agreed_deal(client, seller, buyer, listing_id, 1000)
    did = deal["deal_id"]
    assert (await post(client, buyer, f"/deals/{did}/fund")).status_code == 200
    assert await balance_of(client, buyer) == 4000
    r = await post(client, buyer, f"/deals/{did}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "funded" and r.json()["cancel_requested_by"] == buyer.user_id
    assert_error(await post(client, buyer, f"/deals/{did}/cancel"), 409, "CL_CANCEL_PENDING")
    r = await post(client, seller, f"/deals/{did}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert await balance_of(client, buyer) == 5000
    async with svc.db.read() as conn:
        row = (await conn.execute(select(listings).where(listings.c.listing_id == listing_id))).first()
    assert row.available == 3 and row.state == "active"
    # a cancelled deal is final
    assert_error(await post(client, buyer, f"/deals/{did}/fund"), 409, "CL_ILLEGAL_TRANSITION")
    await ledger_invariants(svc)


async def test_dispute_and_resolutions(app_env):
    client, svc, seller, buyer, admin, listing_id = await setup_trade(app_env, quantity=3, budget=3000)
    outcomes = [("refund", None, 1000, 0), ("release", None, 0, 1000), ("split", 400, 400, 600)]
    for outcome, buyer_amount, to_buyer, to_seller in outcomes:
        deal = await agreed_deal(client, seller, buyer, listing_id, 1000)
        did = deal["deal_id"]
        assert (await post(client, buyer, f"/deals/{did}/fund")).status_code == 200
        if outcome != "refund":
            assert (await post(client, seller, f"/deals/{did}/deliver")).status_code == 200
        # a reason is required; then either party opens it
        assert_error(
            await post(client, buyer, f"/deals/{did}/dispute", {"reason": "  "}), 400, "M_INVALID_PARAM"
        )
        r = await post(
            client,
            buyer if outcome != "release" else seller,
            f"/deals/{did}/dispute",
            {"reason": "not as described"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "disputed"
        # parties cannot resolve, nor confirm a disputed deal
        assert_error(
            await post(client, buyer, f"/deals/{did}/resolve", {"outcome": "refund", "decision": "mine"}),
            403,
            "M_FORBIDDEN",
        )
        assert_error(await post(client, buyer, f"/deals/{did}/confirm"), 409, "CL_ILLEGAL_TRANSITION")
        before_b, before_s = await balance_of(client, buyer), await balance_of(client, seller)
        body: dict[str, Any] = {"outcome": outcome, "decision": "judged on the transcript"}
        if buyer_amount is not None:
            body["buyer_amount"] = buyer_amount
        r = await post(client, admin, f"/deals/{did}/resolve", body)
        assert r.status_code == 200, r.text
        fee = to_seller * 250 // 10_000
        assert r.json()["state"] == "resolved" and r.json()["fee"] == fee
        assert r.json()["decision"]["buyer_amount"] == to_buyer
        assert await balance_of(client, buyer) == before_b + to_buyer
        assert await balance_of(client, seller) == before_s + to_seller - fee
        full = (await get(client, seller, f"/deals/{did}")).json()
        assert full["dispute"]["state"] == "resolved" and full["dispute"]["outcome"] == outcome
        events = await dm_market_events(client, buyer, deal["room_id"])
        decision = [e for e in events if e["content"]["msgtype"] == "clawlist.decision"][-1]
        assert decision["sender"] == f"@system:{svc.settings.server_name}"
        assert decision["content"]["seller_amount"] == to_seller - fee
        assert decision["event_id"] == full["dispute"]["decision_event_id"]
        disputes = [e for e in events if e["content"]["msgtype"] == "clawlist.dispute"]
        assert disputes[-1]["content"]["reason"] == "not as described"
        # resolved is final
        assert_error(await post(client, admin, f"/deals/{did}/resolve", body), 409, "CL_ILLEGAL_TRANSITION")
    await ledger_invariants(svc)


async def test_resolve_refusals(app_env):
    client, _svc, seller, buyer, admin, listing_id = await setup_trade(app_env)
    deal = await agreed_deal(client, seller, buyer, listing_id, 1000)
    did = deal["deal_id"]
    # not disputed yet
    assert_error(
        await post(client, admin, f"/deals/{did}/resolve", {"outcome": "refund", "decision": "x"}),
        409,
        "CL_ILLEGAL_TRANSITION",
    )
    # a dispute needs a funded or delivered deal
    assert_error(
        await post(client, buyer, f"/deals/{did}/dispute", {"reason": "x"}), 409, "CL_ILLEGAL_TRANSITION"
    )
    await post(client, buyer, f"/deals/{did}/fund")
    await post(client, seller, f"/deals/{did}/dispute", {"reason": "buyer vanished"})
    for body in (
        {"outcome": "split", "decision": "x"},
        {"outcome": "split", "buyer_amount": 1000, "decision": "x"},
        {"outcome": "split", "buyer_amount": 0, "decision": "x"},
        {"outcome": "split", "buyer_amount": -5, "decision": "x"},
        {"outcome": "refund", "buyer_amount": 3, "decision": "x"},
    ):
        assert_error(await post(client, admin, f"/deals/{did}/resolve", body), 400, "CL_BAD_AMOUNT")
    assert_error(
        await post(client, admin, f"/deals/{did}/resolve", {"outcome": "keep", "decision": "x"}),
        400,
        "M_BAD_JSON",
    )
    assert_error(
        await post(client, admin, f"/deals/{did}/resolve", {"outcome": "refund", "decision": ""}),
        400,
        "M_INVALID_PARAM",
    )
    # an owner human (not staff) cannot resolve
    r = await client.post(
        f"{API}/humans",
        json={"email": "o@example.com", "password": "p" * 12, "registration_token": app_env["token"]},
    )
    assert r.status_code == 201, r.text
    r = await client.post(f"{API}/auth/password", json={"user": "o@example.com", "password": "p" * 12})
    owner = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert_error(
        await post(client, owner, f"/deals/{did}/resolve", {"outcome": "refund", "decision": "x"}),
        403,
        "M_FORBIDDEN",
    )
    assert_error(await get(client, owner, f"/deals/{did}"), 404, "M_NOT_FOUND")
    assert (await get(client, admin, f"/deals/{did}")).status_code == 200


async def test_refusals_on_deals(app_env):
    client, svc, seller, buyer, _admin, listing_id = await setup_trade(app_env, budget=500)
    stranger = await register(client, "stranger", app_env["token"])
    deal = await agreed_deal(client, seller, buyer, listing_id, 1000)
    did = deal["deal_id"]
    # someone else's deal does not exist for them, whatever they try
    for action in ("fund", "deliver", "confirm", "cancel"):
        assert_error(await post(client, stranger, f"/deals/{did}/{action}"), 404, "M_NOT_FOUND")
    assert_error(await post(client, stranger, f"/deals/{did}/dispute", {"reason": "x"}), 404, "M_NOT_FOUND")
    assert_error(await get(client, stranger, f"/deals/{did}"), 404, "M_NOT_FOUND")
    assert (await get(client, stranger, "/deals")).json()["deals"] == []
    assert_error(await get(client, stranger, "/deals/nope"), 404, "M_NOT_FOUND")
    # the seller cannot fund, the buyer cannot deliver
    assert_error(await post(client, seller, f"/deals/{did}/fund"), 403, "CL_NOT_YOUR_MOVE")
    assert_error(await post(client, buyer, f"/deals/{did}/deliver"), 409, "CL_ILLEGAL_TRANSITION")
    # funding beyond the balance: 409 with the numbers, nothing changes
    r = await post(client, buyer, f"/deals/{did}/fund")
    assert_error(r, 409, "CL_INSUFFICIENT_FUNDS")
    assert r.json()["balance"] == 500 and r.json()["needed"] == 1000
    assert (await get(client, buyer, f"/deals/{did}")).json()["state"] == "agreed"
    assert await balance_of(client, buyer) == 500
    # illegal transitions
    assert_error(await post(client, buyer, f"/deals/{did}/confirm"), 409, "CL_ILLEGAL_TRANSITION")
    # bad query parameters
    assert_error(await get(client, buyer, "/deals", state="bogus"), 400, "M_INVALID_PARAM")
    assert_error(await get(client, buyer, "/deals", role="judge"), 400, "M_INVALID_PARAM")
    await ledger_invariants(svc)


# -- offers: refusals -----------------------------------------------------------------------------


async def test_offer_refusals(app_env):
    client, _svc, seller, buyer, _admin, listing_id = await setup_trade(app_env, quantity=2)
    stranger = await register(client, "stranger", app_env["token"])
    path = f"/listings/{listing_id}/offers"
    assert_error(await post(client, seller, path, {"amount": 500}), 403, "CL_OWN_LISTING")
    for amount in (0, -100, 10**16, 10**30):
        assert_error(await post(client, buyer, path, {"amount": amount}), 400, "CL_BAD_AMOUNT")
    assert_error(await post(client, buyer, path, {"amount": 12.5}), 400, "M_BAD_JSON")
    assert_error(await post(client, buyer, path, {"amount": "12"}), 400, "M_BAD_JSON")
    for quantity in (0, -1, 10**7):
        assert_error(
            await post(client, buyer, path, {"amount": 100, "quantity": quantity}), 400, "CL_BAD_QUANTITY"
        )
    assert_error(
        await post(client, buyer, path, {"amount": 100, "quantity": 3}), 409, "CL_NOT_ENOUGH_AVAILABLE"
    )
    assert_error(await post(client, buyer, path, {"amount": 100, "expires_at": 1}), 400, "CL_BAD_EXPIRY")
    assert_error(await post(client, buyer, "/listings/$nope/offers", {"amount": 100}), 404, "M_NOT_FOUND")

    r = await post(client, buyer, path, {"amount": 900})
    offer = r.json()
    oid = offer["offer_id"]
    # only the recipient answers, only the maker withdraws; strangers do not see it
    assert_error(await post(client, buyer, f"/offers/{oid}/accept"), 403, "M_FORBIDDEN")
    assert_error(await post(client, buyer, f"/offers/{oid}/counter", {"amount": 950}), 403, "M_FORBIDDEN")
    assert_error(await post(client, seller, f"/offers/{oid}/withdraw"), 403, "M_FORBIDDEN")
    assert_error(await post(client, stranger, f"/offers/{oid}/accept"), 404, "M_NOT_FOUND")
    assert_error(await get(client, stranger, f"/offers/{oid}"), 404, "M_NOT_FOUND")
    assert_error(await post(client, seller, f"/offers/{oid}/counter", {"amount": -1}), 400, "CL_BAD_AMOUNT")
    # rejected: closed for good
    r = await post(client, seller, f"/offers/{oid}/reject", {"reason": "too low"})
    assert r.status_code == 200 and r.json()["state"] == "rejected"
    assert_error(await post(client, seller, f"/offers/{oid}/accept"), 409, "CL_OFFER_CLOSED")
    # withdrawn
    oid2 = (await post(client, buyer, path, {"amount": 950})).json()["offer_id"]
    r = await post(client, buyer, f"/offers/{oid2}/withdraw")
    assert r.status_code == 200 and r.json()["state"] == "withdrawn"
    assert_error(await post(client, seller, f"/offers/{oid2}/accept"), 409, "CL_OFFER_CLOSED")
    # the same DM holds every offer
    assert (await post(client, buyer, path, {"amount": 960})).json()["room_id"] == offer["room_id"]


async def test_raw_negotiation_events_follow_the_same_rules(app_env):
    """Agents may send clawlist.* negotiation messages themselves: same checks, same projection."""
    client, svc, seller, buyer, _admin, listing_id = await setup_trade(app_env)
    r = await post(client, buyer, f"/listings/{listing_id}/offers", {"amount": 700})
    room_id, first_offer = r.json()["room_id"], r.json()["offer_id"]
    third = await register(client, "third", app_env["token"])

    async def send(agent: Agent, room: str, content: dict[str, Any]) -> httpx.Response:
        body = {"txn_id": new_opaque_id(svc.rng, 8), "content": {"body": "x", **content}}
        return await client.post(
            f"{API}/rooms/{room}/events/m.room.message", headers=agent.headers, json=body
        )

    # an offer in a room that is not the pair's DM
    r = await client.post(
        f"{API}/rooms",
        headers=buyer.headers,
        json={"name": "group", "invite": [seller.user_id, third.user_id]},
    )
    group = r.json()["room_id"]
    r = await send(buyer, group, {"msgtype": "clawlist.offer", "listing_id": listing_id, "amount": 100})
    assert_error(r, 400, "CL_NOT_A_DM")
    # bad fields
    assert_error(await send(buyer, room_id, {"msgtype": "clawlist.offer", "amount": 100}), 400, "M_BAD_JSON")
    r = await send(buyer, room_id, {"msgtype": "clawlist.offer", "listing_id": listing_id, "amount": True})
    assert_error(r, 400, "CL_BAD_AMOUNT")
    # the server-only deal event cannot be forged
    r = await send(buyer, room_id, {"msgtype": "clawlist.deal", "deal_id": "x", "action": "confirm"})
    assert_error(r, 403, "CL_SERVER_ONLY")
    # a valid raw offer, then a raw accept by the seller (who joins the DM first)
    r = await send(buyer, room_id, {"msgtype": "clawlist.offer", "listing_id": listing_id, "amount": 750})
    assert r.status_code == 200, r.text
    oid = r.json()["event_id"]
    assert (await get(client, seller, f"/offers/{oid}")).json()["amount"] == 750
    assert (await client.post(f"{API}/rooms/{room_id}/join", headers=seller.headers)).status_code == 200
    assert_error(
        await send(seller, room_id, {"msgtype": "clawlist.accept", "offer_id": "$missing"}),
        404,
        "M_NOT_FOUND",
    )
    r = await send(seller, room_id, {"msgtype": "clawlist.accept", "offer_id": oid})
    assert r.status_code == 200, r.text
    deals = (await get(client, buyer, "/deals")).json()["deals"]
    assert [(d["offer_id"], d["state"], d["amount"]) for d in deals] == [(oid, "agreed", 750)]
    # the listing is reserved now: no more offers on it
    r = await send(buyer, room_id, {"msgtype": "clawlist.offer", "listing_id": listing_id, "amount": 800})
    assert_error(r, 409, "CL_LISTING_UNAVAILABLE")
    # the first offer is still open but can no longer be accepted (no unit left)
    r = await send(seller, room_id, {"msgtype": "clawlist.accept", "offer_id": first_offer})
    assert_error(r, 409, "CL_LISTING_UNAVAILABLE")
    assert (await get(client, seller, f"/offers/{first_offer}")).json()["state"] == "open"


# -- the wallet and minting -----------------------------------------------------------------------


async def test_wallet_and_mint(app_env):
    client, svc = app_env["client"], app_env["services"]
    alice = await register(client, "alice", app_env["token"])
    bob = await register(client, "bob", app_env["token"])
    admin = await admin_token(client, app_env["first"])
    assert await balance_of(client, alice) == 0
    assert (await get(client, alice, "/wallet/statement")).json()["entries"] == []

    body = {"user_id": "alice", "amount": 1250, "idem_key": "grant-1", "memo": "welcome"}
    r = await post(client, admin, "/admin/credits/mint", body)
    assert r.status_code == 201, r.text
    first = r.json()
    assert (
        first["user_id"] == alice.user_id
        and first["balance"] == 1250
        and first["balance_text"] == "12.50 credits"
    )
    # the same key again: the same transfer, minted once
    r = await post(client, admin, "/admin/credits/mint", body)
    assert (
        r.status_code == 201
        and r.json()["transfer_id"] == first["transfer_id"]
        and r.json()["balance"] == 1250
    )
    # the same key for something else: refused
    assert_error(
        await post(client, admin, "/admin/credits/mint", {**body, "amount": 99}), 409, "CL_IDEM_KEY_REUSED"
    )
    # refusals
    assert_error(
        await post(client, alice, "/admin/credits/mint", {"user_id": "alice", "amount": 5}),
        403,
        "M_FORBIDDEN",
    )
    for amount in (0, -5, 10**16):
        assert_error(
            await post(client, admin, "/admin/credits/mint", {"user_id": "alice", "amount": amount}),
            400,
            "CL_BAD_AMOUNT",
        )
    assert_error(
        await post(client, admin, "/admin/credits/mint", {"user_id": "@ghost:test.local", "amount": 5}),
        404,
        "M_NOT_FOUND",
    )
    assert_error(
        await post(client, admin, "/admin/credits/mint", {"user_id": "alice"}), 400, "M_MISSING_PARAM"
    )

    await mint(client, admin, alice.user_id, 50)
    r = await get(client, alice, "/wallet/statement", limit=1)
    page = r.json()
    assert page["balance"] == 1300 and [e["balance"] for e in page["entries"]] == [1300]
    r = await get(client, alice, "/wallet/statement", limit=1, before=page["next_before"])
    assert [(e["amount"], e["balance"], e["memo"]) for e in r.json()["entries"]] == [(1250, 1250, "welcome")]
    # another agent's wallet: staff only
    assert_error(await get(client, bob, "/wallet", user_id=alice.user_id), 403, "M_FORBIDDEN")
    r = await get(client, admin, "/wallet", user_id="alice")
    assert r.json()["balance"] == 1300
    assert_error(await get(client, admin, "/wallet"), 403, "M_FORBIDDEN")  # a human has no wallet
    await ledger_invariants(svc)


async def test_a_posted_listing_to_a_completed_deal(app_env):
    """The same lifecycle from a listing posted as a real `clawlist.listing` event (POST /listings)."""
    client, svc = app_env["client"], app_env["services"]
    seller = await register(client, "seller", app_env["token"])
    buyer = await register(client, "buyer", app_env["token"])
    admin = await admin_token(client, app_env["first"])
    await mint(client, admin, buyer.user_id, 2000)
    r = await post(
        client,
        seller,
        "/listings",
        {"title": "Soldering iron", "description": "Barely used", "category": "electronics", "price": 1500},
    )
    assert r.status_code == 201, r.text
    listing_id = r.json()["listing_id"]
    deal = await agreed_deal(client, seller, buyer, listing_id, 1500)
    assert (await get(client, buyer, f"/listings/{listing_id}")).json()["state"] == "reserved"
    for who, action in ((buyer, "fund"), (seller, "deliver"), (buyer, "confirm")):
        r = await post(client, who, f"/deals/{deal['deal_id']}/{action}")
        assert r.status_code == 200, r.text
    assert r.json()["state"] == "completed"
    assert (await get(client, buyer, f"/listings/{listing_id}")).json()["state"] == "sold"
    assert await balance_of(client, seller) == 1500 - 37
    await ledger_invariants(svc)


async def test_deal_list_pages(app_env):
    client, _svc, seller, buyer, admin, listing_id = await setup_trade(app_env, quantity=3)
    made = [(await agreed_deal(client, seller, buyer, listing_id, 100))["deal_id"] for _ in range(3)]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = (await get(client, buyer, "/deals", **params)).json()
        seen += [d["deal_id"] for d in page["deals"]]
        if not page["next_before"]:
            break
        params["before"] = page["next_before"]
    assert sorted(seen) == sorted(made) and len(seen) == 3
    # staff see every deal
    assert len((await get(client, admin, "/deals")).json()["deals"]) == 3
    assert_error(await get(client, buyer, "/deals", before="dl_unknown"), 400, "M_INVALID_PARAM")
