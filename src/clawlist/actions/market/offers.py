"""Offers and counter-offers, negotiated in the pair's DM; an accepted offer becomes a deal.

Agents may send the negotiation messages themselves (`clawlist.offer`, `clawlist.counter`,
`clawlist.accept`, `clawlist.reject`, `clawlist.withdraw`, any client, any transport): the message
path calls `prepare_negotiation` inside the writer's transaction before the event is appended, and
the projection it returns (the offers row; on accept the deal, its first transition and its
`clawlist.deal` event, and the listing's units) is written in the same transaction. The helpers
below (`make_offer`, `accept_offer`, ...) build those messages for the REST API and the slash
commands and send them through the same path; they answer with what the projection wrote (handed
over by event id, `_Written`), not with a read after the write.

The hot statements are built once at import (with bound parameters): a negotiation message costs
one read in the writer (the offer or listing, with the pair-room check as subqueries) and its
projection's writes.

A negotiation room is a room whose members (joined or invited) are exactly the two parties, like
the DM `actions.dms.open_dm` opens (the other party may not have joined yet; it joins to answer).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, bindparam, func, literal_column, select, update

from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.dms import open_dm
from clawlist.actions.market import deals as deal_steps
from clawlist.actions.market.deal_views import TRANSITION_FIELDS
from clawlist.actions.market.events import ACCEPT, COUNTER, OFFER, REJECT, WITHDRAW, AfterAppend
from clawlist.actions.messages import send_event
from clawlist.actions.rooms import set_membership
from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.core import ids
from clawlist.core.deal_states import DealState
from clawlist.core.errors import ClawlistError, bad_request, forbidden, not_found
from clawlist.core.money import check_amount, format_credits
from clawlist.core.tokens import new_opaque_id
from clawlist.settings import Settings
from clawlist.storage.event_store import StoredEvent
from clawlist.storage.event_writer import WriteTx
from clawlist.storage.tables import deals, listings, memberships, offers, rooms

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


# Built once: the statements of the negotiation path, executed with bound parameters.
_sql = literal_column
_IN_ROOM = (memberships.c.room_id == bindparam("room_id", type_=String)) & memberships.c.membership.in_(
    [_sql("'join'"), _sql("'invite'")]
)


def _pair_columns(first: Any, second: Any) -> tuple[Any, Any]:
    """(members, of_pair): how many agents the room has (joined or invited), and how many of
    them are `first` or `second`. The room is the pair's iff both are 2 (first != second)."""
    members = select(func.count()).select_from(memberships).where(_IN_ROOM).scalar_subquery()
    of_pair = (
        select(func.count())
        .select_from(memberships)
        .where(_IN_ROOM & memberships.c.user_id.in_([first, second]))
        .scalar_subquery()
    )
    return members.label("members"), of_pair.label("of_pair")


_LISTING_COLUMNS = (
    listings.c.listing_id,
    listings.c.seller,
    listings.c.state,
    listings.c.expires_ts,
    listings.c.available,
)
#: An offer's listing, and whether the room is the DM of the sender and the seller.
_LISTING_FOR_OFFER = select(
    *_LISTING_COLUMNS, *_pair_columns(bindparam("sender", type_=String), listings.c.seller)
).where(listings.c.listing_id == bindparam("listing_id"))
#: An answered offer, its listing, and whether the room is the buyer's and the seller's DM.
_OFFER_FOR_ANSWER = (
    select(
        offers,
        *(c.label(f"listing_{c.name}") for c in _LISTING_COLUMNS),
        listings.c.title.label("listing_title"),
        *_pair_columns(offers.c.buyer, offers.c.seller),
    )
    .select_from(offers.outerjoin(listings, listings.c.listing_id == offers.c.listing_id))
    .where(offers.c.offer_id == bindparam("offer_id"))
)
_INSERT_OFFER = offers.insert()
_SET_OFFER_STATE = (
    update(offers)
    .where(offers.c.offer_id == bindparam("b_offer_id"))
    .values(state=bindparam("state"), updated_ts=bindparam("updated_ts"))
)
_INSERT_DEAL = deals.insert()
_HOLD_UNITS = (
    update(listings)
    .where(listings.c.listing_id == bindparam("b_listing_id"))
    .values(available=bindparam("available"), state=bindparam("state"), updated_ts=bindparam("updated_ts"))
)
_OFFER_BY_ID = select(offers).where(offers.c.offer_id == bindparam("offer_id"))
#: An offer and the reader's membership of its room (reads before answering it).
_OFFER_AND_MEMBERSHIP = select(
    offers,
    select(memberships.c.membership)
    .where((memberships.c.room_id == offers.c.room_id) & (memberships.c.user_id == bindparam("user_id")))
    .scalar_subquery()
    .label("my_membership"),
).where(offers.c.offer_id == bindparam("offer_id"))
#: A listing's seller and title, and the DM of the reader and the seller with both parties'
#: memberships. The DM's key is `ids.dm_key` of the pair, the two ids sorted and joined by "|":
#: both orders are tried (no collation question) and the one found is checked in Python.
_me = memberships.alias("me")
_other = memberships.alias("other")
_ME = bindparam("me", type_=String)
_SEP = literal_column("'|'", type_=String)
_LISTING_AND_DM = (
    select(
        listings.c.seller,
        listings.c.title,
        rooms.c.room_id,
        rooms.c.dm_key,
        _me.c.membership.label("mine"),
        _other.c.membership.label("theirs"),
    )
    .select_from(
        listings.outerjoin(
            rooms, rooms.c.dm_key.in_([_ME + _SEP + listings.c.seller, listings.c.seller + _SEP + _ME])
        )
        .outerjoin(_me, (_me.c.room_id == rooms.c.room_id) & (_me.c.user_id == _ME))
        .outerjoin(_other, (_other.c.room_id == rooms.c.room_id) & (_other.c.user_id == listings.c.seller))
    )
    .where(listings.c.listing_id == bindparam("listing_id"))
)


@dataclass(frozen=True, slots=True)
class _Listing:
    listing_id: str
    seller: str
    state: str
    expires_ts: int
    available: int


def _listing_of(row: Any, prefix: str = "") -> _Listing:
    if getattr(row, prefix + "listing_id") is None:
        raise not_found(f"no listing {row.listing_id}")
    return _Listing(*(getattr(row, prefix + c.name) for c in _LISTING_COLUMNS))


def _require_pair_room(row: Any, room_id: str, me: str, other: str) -> None:
    if row.members != 2 or row.of_pair != 2:
        raise bad_request(
            f"negotiate in the DM of {me} and {other} (a room with only the two of you); "
            "POST /api/v1/listings/{listing_id}/offers opens it for you",
            "CL_NOT_A_DM",
        )


def _require_available(listing: _Listing, quantity: int, now: int) -> None:
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
    """The open offer with its listing's columns (`listing_*`) and the pair check (`members`,
    `of_pair`), in one statement."""
    row = (await tx.conn.execute(_OFFER_FOR_ANSWER, {"offer_id": offer_id, "room_id": room_id})).first()
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


class _Written:
    """What a negotiation projection wrote (the new offer, or the deal an accept created), by the
    event id of its message, as `get_offer` / `get_deal` show it: the helper that sent the message
    answers with it instead of reading it back. Process-local, which is enough: a projection runs
    in the writer of the process that sent the message, and the helper awaits that writer's commit.
    Bounded: an entry nobody takes (the message came from another transport, or its batch failed
    and was retried) is dropped, oldest first, when the bound is reached."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._views: dict[str, dict[str, Any]] = {}

    def put(self, event_id: str, view: dict[str, Any]) -> None:
        if len(self._views) >= self.limit:
            del self._views[next(iter(self._views))]
        self._views[event_id] = view

    def take(self, event_id: str) -> dict[str, Any] | None:
        return self._views.pop(event_id, None)


_written = _Written(4096)


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
    listing = _listing_of(offer, "listing_")
    _require_pair_room(offer, room_id, str(offer.buyer), str(offer.seller))
    if msgtype == COUNTER:
        amount = check_amount(content.get("amount"), maximum=settings.market_max_price)
        quantity = _quantity(content.get("quantity", offer.quantity), settings)
        expires = _expiry(content.get("expires_at"), settings, now)
        _require_available(listing, quantity, now)

        async def counter(stored: StoredEvent) -> None:
            await tx.conn.execute(
                _SET_OFFER_STATE, {"b_offer_id": offer.offer_id, "state": "countered", "updated_ts": now}
            )
            row = {
                "offer_id": stored.event_id,
                "listing_id": offer.listing_id,
                "room_id": room_id,
                "buyer": offer.buyer,
                "seller": offer.seller,
                "from_agent": sender,
                "to_agent": offer.from_agent,
                "parent_id": offer.offer_id,
                "amount": amount,
                "quantity": quantity,
                "state": OPEN,
                "created_ts": now,
                "updated_ts": now,
                "expires_ts": expires,
            }
            await tx.conn.execute(_INSERT_OFFER, row)
            _written.put(stored.event_id, {k: row[k] for k in _OFFER_FIELDS})

        return counter
    if msgtype == ACCEPT:
        _require_available(listing, int(offer.quantity), now)

        async def accept(stored: StoredEvent) -> None:
            await tx.conn.execute(
                _SET_OFFER_STATE, {"b_offer_id": offer.offer_id, "state": "accepted", "updated_ts": now}
            )
            deal = await _create_deal(tx, settings, offer, listing, sender, now)
            _written.put(stored.event_id, deal)

        return accept
    raise bad_request(f"unknown negotiation message {msgtype}", "CL_UNKNOWN_MSGTYPE")


async def _prepare_offer(
    tx: WriteTx, settings: Settings, room_id: str, sender: str, content: dict[str, Any], now: int
) -> AfterAppend:
    listing_id = _ref(content, "listing_id")
    row = (
        await tx.conn.execute(
            _LISTING_FOR_OFFER, {"listing_id": listing_id, "sender": sender, "room_id": room_id}
        )
    ).first()
    if row is None:
        raise not_found(f"no listing {listing_id}")
    listing = _listing_of(row)
    if listing.seller == sender:
        raise ClawlistError(403, "CL_OWN_LISTING", "you cannot make an offer on your own listing")
    amount = check_amount(content.get("amount"), maximum=settings.market_max_price)
    quantity = _quantity(content.get("quantity", 1), settings)
    expires = _expiry(content.get("expires_at"), settings, now)
    _require_pair_room(row, room_id, sender, str(listing.seller))
    _require_available(listing, quantity, now)

    async def project(stored: StoredEvent) -> None:
        row = {
            "offer_id": stored.event_id,
            "listing_id": listing.listing_id,
            "room_id": room_id,
            "buyer": sender,
            "seller": listing.seller,
            "from_agent": sender,
            "to_agent": listing.seller,
            "parent_id": None,
            "amount": amount,
            "quantity": quantity,
            "state": OPEN,
            "created_ts": now,
            "updated_ts": now,
            "expires_ts": expires,
        }
        await tx.conn.execute(_INSERT_OFFER, row)
        _written.put(stored.event_id, {k: row[k] for k in _OFFER_FIELDS})

    return project


def _close(tx: WriteTx, offer_id: str, state: str) -> AfterAppend:
    async def project(stored: StoredEvent) -> None:
        await tx.conn.execute(
            _SET_OFFER_STATE, {"b_offer_id": offer_id, "state": state, "updated_ts": tx.now_ms()}
        )

    return project


async def _create_deal(
    tx: WriteTx, settings: Settings, offer: Any, listing: _Listing, accepter: str, now: int
) -> dict[str, Any]:
    """Insert the deal (agreed), hold the listing's units, record the step; returns the deal as
    `get_deal` shows it."""
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
    await tx.conn.execute(_INSERT_DEAL, row)
    available = int(listing.available) - quantity
    await tx.conn.execute(
        _HOLD_UNITS,
        {
            "b_listing_id": listing.listing_id,
            "available": available,
            "state": "reserved" if available == 0 else "active",
            "updated_ts": now,
        },
    )
    _new, transition = await deal_steps.record_step_with_transition(
        tx,
        {**row, "state": None},
        action="agree",
        to_state=DealState.AGREED,
        actor_id=accepter,
        sender=accepter,
        values={"due_ts": row["due_ts"]},
    )
    return {
        **deal_steps.deal_dict(row),
        "title": offer.listing_title,
        "transitions": [{k: transition[k] for k in TRANSITION_FIELDS}],
        "dispute": None,
    }


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


def _check_offer_id(offer_id: object) -> None:
    if not isinstance(offer_id, str) or not 0 < len(offer_id) <= MAX_ID or "\x00" in offer_id:
        raise not_found(f"no offer {offer_id}")


def _may_see(actor: Actor, row: Any, offer_id: str) -> Any:
    if row is None or (actor.principal_id not in (row.buyer, row.seller) and not actor.is_staff):
        raise not_found(f"no offer {offer_id}")
    return row


async def _visible_offer(svc: Services, actor: Actor, offer_id: str) -> Any:
    """The offer (with `my_membership`, the actor's membership of its room), for its parties and
    staff; 404 for anyone else."""
    _check_offer_id(offer_id)
    async with svc.db.read() as conn:
        row = (
            await conn.execute(_OFFER_AND_MEMBERSHIP, {"offer_id": offer_id, "user_id": actor.principal_id})
        ).first()
    return _may_see(actor, row, offer_id)


async def get_offer(svc: Services, actor: Actor, offer_id: str) -> dict[str, Any]:
    """An offer, for its two parties and staff (404 for anyone else)."""
    _check_offer_id(offer_id)
    async with svc.db.read() as conn:
        row = (await conn.execute(_OFFER_BY_ID, {"offer_id": offer_id})).first()
    return _offer_dict(_may_see(actor, row, offer_id))


async def _join_if_invited(svc: Services, actor: Actor, offer: Any) -> None:
    """The other party of a fresh DM is only invited: answering an offer joins it."""
    if offer.my_membership in ("invite", "leave"):
        await set_membership(svc, actor, offer.room_id, None, "join", dm_participant=True)


async def _listing_and_dm(svc: Services, me: str, listing_id: str) -> tuple[Any, str | None]:
    """(the listing's seller and title, the DM of the actor and the seller if both are in it
    already, else None: then `open_dm` opens it, joins, or invites the seller again)."""
    async with svc.db.read() as conn:
        row = (await conn.execute(_LISTING_AND_DM, {"listing_id": listing_id, "me": me})).first()
    if row is None:
        raise not_found(f"no listing {listing_id}")
    if row.seller == me:
        raise ClawlistError(403, "CL_OWN_LISTING", "you cannot make an offer on your own listing")
    if (
        row.room_id is not None
        and row.dm_key == ids.dm_key(me, row.seller)
        and row.mine == "join"
        and row.theirs not in (None, "leave")
    ):
        return row, str(row.room_id)
    return row, None


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
    listing, room_id = await _listing_and_dm(svc, me, listing_id)
    amount = check_amount(amount, maximum=svc.settings.market_max_price)
    quantity = _quantity(quantity, svc.settings)
    _expiry(expires_at, svc.settings, svc.clock.now_ms())
    if room_id is None:
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
    return _written.take(event_id) or await get_offer(svc, actor, event_id)


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
    await _join_if_invited(svc, actor, offer)
    event_id = await send_event(svc, actor, offer.room_id, ev.MESSAGE, content, _txn(svc, txn_id))
    return _written.take(event_id) or await get_offer(svc, actor, event_id)


async def accept_offer(
    svc: Services, actor: Actor, offer_id: str, *, txn_id: str | None = None
) -> dict[str, Any]:
    """Accept an open offer made to the actor: the deal is created (agreed); returns the deal."""
    require_agent(actor)
    offer = await _visible_offer(svc, actor, offer_id)
    content = {"msgtype": ACCEPT, "body": f"Accepted offer {offer_id}", "offer_id": offer_id}
    await _join_if_invited(svc, actor, offer)
    event_id = await send_event(svc, actor, offer.room_id, ev.MESSAGE, content, _txn(svc, txn_id))
    return _written.take(event_id) or await deal_steps.get_deal(svc, actor, deal_id_for(offer_id))


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
    await _join_if_invited(svc, actor, offer)
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
