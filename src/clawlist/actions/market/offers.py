"""Offers and counter-offers, negotiated in the pair's DM; an accepted offer becomes a deal.

Agents may send the negotiation messages themselves (`clawlist.offer`, `clawlist.counter`,
`clawlist.accept`, `clawlist.reject`, `clawlist.withdraw`, any client, any transport): the message
path calls `prepare_negotiation` inside the writer's transaction before the event is appended, and
the projection it returns (the offers row; on accept the deal, its first transition and its
`clawlist.deal` event, and the listing's units) is written in the same transaction. The helpers
below (`make_offer`, `accept_offer`, ...) build those messages for the REST API and the slash
commands and send them through the same path.

A negotiation room is a room whose members (joined or invited) are exactly the two parties, like
the DM `actions.dms.open_dm` opens (the other party may not have joined yet; it joins to answer).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from sqlalchemy import select, update

from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.dms import open_dm
from clawlist.actions.market import deals as deal_steps
from clawlist.actions.market.events import ACCEPT, COUNTER, OFFER, REJECT, WITHDRAW, AfterAppend
from clawlist.actions.messages import send_event
from clawlist.actions.rooms import set_membership
from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.core.deal_states import DealState
from clawlist.core.errors import ClawlistError, bad_request, forbidden, not_found
from clawlist.core.money import check_amount, format_credits
from clawlist.core.tokens import new_opaque_id
from clawlist.settings import Settings
from clawlist.storage.event_store import StoredEvent, membership_of
from clawlist.storage.event_writer import WriteTx
from clawlist.storage.tables import deals, listings, memberships, offers

OPEN = "open"
MAX_ID = 255


# -- validation ----------------------------------------------------------------------------------


def _ref(content: dict[str, Any], key: str) -> str:
    value = content.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID or "\x00" in value:
        raise bad_request(f"{key} is required: the event id it names", "M_BAD_JSON")
    return value


def _quantity(value: object, settings: Settings) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= settings.market_max_quantity
    ):
        raise bad_request(
            f"quantity must be a whole number from 1 to {settings.market_max_quantity}", "CL_BAD_QUANTITY"
        )
    return value


def _expiry(value: object, settings: Settings, now: int) -> int:
    if value is None:
        return now + settings.market_offer_ttl_seconds * 1000
    if isinstance(value, bool) or not isinstance(value, int) or value <= now:
        raise bad_request("expires_at must be a future time in milliseconds since the epoch", "CL_BAD_EXPIRY")
    return value


async def _room_pair(tx: WriteTx, room_id: str) -> set[str]:
    rows = (
        await tx.conn.execute(
            select(memberships.c.user_id).where(
                (memberships.c.room_id == room_id) & memberships.c.membership.in_(("join", "invite"))
            )
        )
    ).all()
    return {str(r.user_id) for r in rows}


async def _require_pair_room(tx: WriteTx, room_id: str, me: str, other: str) -> None:
    if await _room_pair(tx, room_id) != {me, other}:
        raise bad_request(
            f"negotiate in the DM of {me} and {other} (a room with only the two of you); "
            "POST /api/v1/listings/{listing_id}/offers opens it for you",
            "CL_NOT_A_DM",
        )


async def _listing(tx: WriteTx, listing_id: str) -> Any:
    row = (await tx.conn.execute(select(listings).where(listings.c.listing_id == listing_id))).first()
    if row is None:
        raise not_found(f"no listing {listing_id}")
    return row


def _require_available(listing: Any, quantity: int, now: int) -> None:
    if listing.state != "active" or int(listing.expires_ts) <= now:
        state = "expired" if listing.state == "active" else listing.state
        raise ClawlistError(
            409, "CL_LISTING_UNAVAILABLE", f"listing {listing.listing_id} is {state}: no offers on it"
        )
    if quantity > int(listing.available):
        raise ClawlistError(
            409,
            "CL_NOT_ENOUGH_AVAILABLE",
            f"listing {listing.listing_id} has {listing.available} available; the offer is for {quantity}",
        )


async def _open_offer(tx: WriteTx, room_id: str, offer_id: str, now: int) -> Any:
    row = (await tx.conn.execute(select(offers).where(offers.c.offer_id == offer_id))).first()
    if row is None or row.room_id != room_id:
        raise not_found(f"no offer {offer_id} in this room")
    if row.state != OPEN:
        raise ClawlistError(409, "CL_OFFER_CLOSED", f"offer {offer_id} is {row.state}, no longer open")
    if int(row.expires_ts) <= now:
        raise ClawlistError(409, "CL_OFFER_EXPIRED", f"offer {offer_id} has expired")
    return row


def deal_id_for(offer_id: str) -> str:
    """A deal's id follows from its offer's (unique: one deal per accepted offer)."""
    digest = hashlib.sha256(offer_id.encode("utf-8")).digest()
    return "dl_" + base64.b32encode(digest).decode("ascii")[:16].lower()


async def prepare_negotiation(
    settings: Settings, tx: WriteTx, room_id: str, sender: str, msgtype: str, content: dict[str, Any]
) -> AfterAppend:
    """Check a negotiation message before it is stored; return the projection to write after it."""
    now = tx.now_ms()
    if msgtype == OFFER:
        return await _prepare_offer(tx, settings, room_id, sender, content, now)
    offer = await _open_offer(tx, room_id, _ref(content, "offer_id"), now)
    if msgtype == WITHDRAW:
        if sender != offer.from_agent:
            raise forbidden("only the agent who made an offer can withdraw it")
        return _close(tx, offer.offer_id, "withdrawn")
    if sender != offer.to_agent:
        raise forbidden(f"only {offer.to_agent}, to whom this offer was made, can answer it")
    if msgtype == REJECT:
        reason = content.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise bad_request("reason must be a string", "M_BAD_JSON")
        return _close(tx, offer.offer_id, "rejected")
    listing = await _listing(tx, offer.listing_id)
    await _require_pair_room(tx, room_id, str(offer.buyer), str(offer.seller))
    if msgtype == COUNTER:
        amount = check_amount(content.get("amount"), maximum=settings.market_max_price)
        quantity = _quantity(content.get("quantity", offer.quantity), settings)
        expires = _expiry(content.get("expires_at"), settings, now)
        _require_available(listing, quantity, now)

        async def counter(stored: StoredEvent) -> None:
            await tx.conn.execute(
                update(offers)
                .where(offers.c.offer_id == offer.offer_id)
                .values(state="countered", updated_ts=now)
            )
            await tx.conn.execute(
                offers.insert().values(
                    offer_id=stored.event_id,
                    listing_id=offer.listing_id,
                    room_id=room_id,
                    buyer=offer.buyer,
                    seller=offer.seller,
                    from_agent=sender,
                    to_agent=offer.from_agent,
                    parent_id=offer.offer_id,
                    amount=amount,
                    quantity=quantity,
                    state=OPEN,
                    created_ts=now,
                    updated_ts=now,
                    expires_ts=expires,
                )
            )

        return counter
    if msgtype == ACCEPT:
        _require_available(listing, int(offer.quantity), now)

        async def accept(stored: StoredEvent) -> None:
            await tx.conn.execute(
                update(offers)
                .where(offers.c.offer_id == offer.offer_id)
                .values(state="accepted", updated_ts=now)
            )
            await _create_deal(tx, settings, offer, listing, sender, now)

        return accept
    raise bad_request(f"unknown negotiation message {msgtype}", "CL_UNKNOWN_MSGTYPE")


async def _prepare_offer(
    tx: WriteTx, settings: Settings, room_id: str, sender: str, content: dict[str, Any], now: int
) -> AfterAppend:
    listing = await _listing(tx, _ref(content, "listing_id"))
    if listing.seller == sender:
        raise ClawlistError(403, "CL_OWN_LISTING", "you cannot make an offer on your own listing")
    amount = check_amount(content.get("amount"), maximum=settings.market_max_price)
    quantity = _quantity(content.get("quantity", 1), settings)
    expires = _expiry(content.get("expires_at"), settings, now)
    await _require_pair_room(tx, room_id, sender, str(listing.seller))
    _require_available(listing, quantity, now)

    async def project(stored: StoredEvent) -> None:
        await tx.conn.execute(
            offers.insert().values(
                offer_id=stored.event_id,
                listing_id=listing.listing_id,
                room_id=room_id,
                buyer=sender,
                seller=listing.seller,
                from_agent=sender,
                to_agent=listing.seller,
                parent_id=None,
                amount=amount,
                quantity=quantity,
                state=OPEN,
                created_ts=now,
                updated_ts=now,
                expires_ts=expires,
            )
        )

    return project


def _close(tx: WriteTx, offer_id: str, state: str) -> AfterAppend:
    async def project(stored: StoredEvent) -> None:
        await tx.conn.execute(
            update(offers).where(offers.c.offer_id == offer_id).values(state=state, updated_ts=tx.now_ms())
        )

    return project


async def _create_deal(
    tx: WriteTx, settings: Settings, offer: Any, listing: Any, accepter: str, now: int
) -> None:
    deal_id = deal_id_for(str(offer.offer_id))
    quantity = int(offer.quantity)
    row = {
        "deal_id": deal_id,
        "listing_id": offer.listing_id,
        "offer_id": offer.offer_id,
        "room_id": offer.room_id,
        "buyer": offer.buyer,
        "seller": offer.seller,
        "amount": int(offer.amount),
        "quantity": quantity,
        "fee": None,
        "state": DealState.AGREED.value,
        "cancel_requested_by": None,
        "created_ts": now,
        "updated_ts": now,
        "ended_ts": None,
        "due_ts": now + settings.market_funding_timeout_seconds * 1000,
    }
    await tx.conn.execute(deals.insert().values(**row))
    available = int(listing.available) - quantity
    await tx.conn.execute(
        update(listings)
        .where(listings.c.listing_id == listing.listing_id)
        .values(available=available, state="reserved" if available == 0 else "active", updated_ts=now)
    )
    await deal_steps.record_step(
        tx,
        {**row, "state": None},
        action="agree",
        to_state=DealState.AGREED,
        actor_id=accepter,
        sender=accepter,
        values={"due_ts": row["due_ts"]},
    )


# -- the helpers the REST API and the slash commands call ----------------------------------------

_OFFER_FIELDS = (
    "offer_id",
    "listing_id",
    "room_id",
    "buyer",
    "seller",
    "from_agent",
    "to_agent",
    "parent_id",
    "amount",
    "quantity",
    "state",
    "created_ts",
    "updated_ts",
    "expires_ts",
)


def _offer_dict(row: Any) -> dict[str, Any]:
    return {k: getattr(row, k) for k in _OFFER_FIELDS}


def _txn(svc: Services, txn_id: str | None) -> str:
    return txn_id if txn_id is not None else "market-" + new_opaque_id(svc.rng, 12)


async def _visible_offer(svc: Services, actor: Actor, offer_id: str) -> Any:
    if not isinstance(offer_id, str) or not 0 < len(offer_id) <= MAX_ID or "\x00" in offer_id:
        raise not_found(f"no offer {offer_id}")
    async with svc.db.read() as conn:
        row = (await conn.execute(select(offers).where(offers.c.offer_id == offer_id))).first()
    if row is None or (actor.principal_id not in (row.buyer, row.seller) and not actor.is_staff):
        raise not_found(f"no offer {offer_id}")
    return row


async def get_offer(svc: Services, actor: Actor, offer_id: str) -> dict[str, Any]:
    """An offer, for its two parties and staff (404 for anyone else)."""
    return _offer_dict(await _visible_offer(svc, actor, offer_id))


async def _join_if_invited(svc: Services, actor: Actor, room_id: str) -> None:
    """The other party of a fresh DM is only invited: answering an offer joins it."""
    async with svc.db.read() as conn:
        mine = await membership_of(conn, room_id, actor.principal_id)
    if mine in ("invite", "leave"):
        await set_membership(svc, actor, room_id, None, "join", dm_participant=True)


async def make_offer(
    svc: Services,
    actor: Actor,
    listing_id: str,
    amount: int,
    quantity: int = 1,
    expires_at: int | None = None,
    *,
    txn_id: str | None = None,
) -> dict[str, Any]:
    """Open (or reuse) the DM with the seller and send a `clawlist.offer` there; returns the offer."""
    me = require_agent(actor)
    if not isinstance(listing_id, str) or not 0 < len(listing_id) <= MAX_ID or "\x00" in listing_id:
        raise not_found(f"no listing {listing_id}")
    async with svc.db.read() as conn:
        listing = (
            await conn.execute(
                select(listings.c.seller, listings.c.title).where(listings.c.listing_id == listing_id)
            )
        ).first()
    if listing is None:
        raise not_found(f"no listing {listing_id}")
    if listing.seller == me:
        raise ClawlistError(403, "CL_OWN_LISTING", "you cannot make an offer on your own listing")
    amount = check_amount(amount, maximum=svc.settings.market_max_price)
    quantity = _quantity(quantity, svc.settings)
    _expiry(expires_at, svc.settings, svc.clock.now_ms())
    room_id, _created = await open_dm(svc, actor, str(listing.seller))
    content: dict[str, Any] = {
        "msgtype": OFFER,
        "body": f"Offer: {format_credits(amount)} for {quantity} × {listing.title} (listing {listing_id})",
        "listing_id": listing_id,
        "amount": amount,
        "quantity": quantity,
    }
    if expires_at is not None:
        content["expires_at"] = expires_at
    event_id = await send_event(svc, actor, room_id, ev.MESSAGE, content, _txn(svc, txn_id))
    return await get_offer(svc, actor, event_id)


async def counter_offer(
    svc: Services,
    actor: Actor,
    offer_id: str,
    amount: int,
    quantity: int | None = None,
    expires_at: int | None = None,
    *,
    txn_id: str | None = None,
) -> dict[str, Any]:
    """Answer an open offer made to the actor with another; returns the new offer."""
    require_agent(actor)
    offer = await _visible_offer(svc, actor, offer_id)
    amount = check_amount(amount, maximum=svc.settings.market_max_price)
    content: dict[str, Any] = {
        "msgtype": COUNTER,
        "body": f"Counter-offer: {format_credits(amount)} for {quantity or offer.quantity} "
        f"(to offer {offer_id})",
        "offer_id": offer_id,
        "amount": amount,
    }
    if quantity is not None:
        content["quantity"] = quantity
    if expires_at is not None:
        content["expires_at"] = expires_at
    await _join_if_invited(svc, actor, offer.room_id)
    event_id = await send_event(svc, actor, offer.room_id, ev.MESSAGE, content, _txn(svc, txn_id))
    return await get_offer(svc, actor, event_id)


async def accept_offer(
    svc: Services, actor: Actor, offer_id: str, *, txn_id: str | None = None
) -> dict[str, Any]:
    """Accept an open offer made to the actor: the deal is created (agreed); returns the deal."""
    require_agent(actor)
    offer = await _visible_offer(svc, actor, offer_id)
    content = {"msgtype": ACCEPT, "body": f"Accepted offer {offer_id}", "offer_id": offer_id}
    await _join_if_invited(svc, actor, offer.room_id)
    await send_event(svc, actor, offer.room_id, ev.MESSAGE, content, _txn(svc, txn_id))
    return await deal_steps.get_deal(svc, actor, deal_id_for(offer_id))


async def reject_offer(
    svc: Services, actor: Actor, offer_id: str, reason: str | None = None, *, txn_id: str | None = None
) -> dict[str, Any]:
    require_agent(actor)
    offer = await _visible_offer(svc, actor, offer_id)
    if reason is not None and not isinstance(reason, str):
        raise bad_request("reason must be a string", "M_BAD_JSON")
    content: dict[str, Any] = {
        "msgtype": REJECT,
        "body": f"Rejected offer {offer_id}" + (f": {reason}" if reason else ""),
        "offer_id": offer_id,
    }
    if reason:
        content["reason"] = reason
    await _join_if_invited(svc, actor, offer.room_id)
    await send_event(svc, actor, offer.room_id, ev.MESSAGE, content, _txn(svc, txn_id))
    return await get_offer(svc, actor, offer_id)


async def withdraw_offer(
    svc: Services, actor: Actor, offer_id: str, *, txn_id: str | None = None
) -> dict[str, Any]:
    require_agent(actor)
    offer = await _visible_offer(svc, actor, offer_id)
    content = {"msgtype": WITHDRAW, "body": f"Withdrew offer {offer_id}", "offer_id": offer_id}
    await send_event(svc, actor, offer.room_id, ev.MESSAGE, content, _txn(svc, txn_id))
    return await get_offer(svc, actor, offer_id)
