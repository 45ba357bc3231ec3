"""How a deal is shown and read: its dict, its clawlist.deal event content, get_deal and list_deals."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.engine import Row

from clawlist.actions.actor import Actor
from clawlist.actions.market.events import DEAL
from clawlist.actions.services import Services
from clawlist.core.deal_states import DealState, is_final
from clawlist.core.errors import bad_request, not_found
from clawlist.core.money import format_credits
from clawlist.storage.tables import deal_transitions, deals, disputes, listings

#: The longest deal id accepted (ids are minted by the server; longer is never one).
MAX_ID = 64

_DEAL_FIELDS = (
    "deal_id",
    "listing_id",
    "offer_id",
    "room_id",
    "buyer",
    "seller",
    "amount",
    "quantity",
    "fee",
    "state",
    "cancel_requested_by",
    "created_ts",
    "updated_ts",
    "ended_ts",
    "due_ts",
)


#: A transition as `get_deal` shows it.
TRANSITION_FIELDS = ("seq", "from_state", "to_state", "actor", "event_id", "note", "ts")


def deal_dict(row: Row[Any] | dict[str, Any]) -> dict[str, Any]:
    data = dict(row._mapping) if isinstance(row, Row) else row
    return {k: data.get(k) for k in _DEAL_FIELDS}


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _body(deal: dict[str, Any], action: str) -> str:
    did, amount = deal["deal_id"], format_credits(int(deal["amount"]))
    buyer, seller = deal["buyer"], deal["seller"]
    if action == "agree":
        return (
            f"Deal {did} agreed: {buyer} buys {deal['quantity']} from {seller} for {amount}. "
            f"Next: the buyer funds it before {_when(deal['due_ts'])}."
        )
    if action == "fund":
        return (
            f"Deal {did} funded: {amount} held in escrow. Next: the seller delivers and marks it delivered."
        )
    if action == "deliver":
        return (
            f"Deal {did} delivered. Next: the buyer confirms (or disputes); it completes on its "
            f"own at {_when(deal['due_ts'])}."
        )
    if action in ("confirm", "auto_confirm"):
        fee = int(deal["fee"] or 0)
        paid = f"{seller} received {format_credits(int(deal['amount']) - fee)} (fee {format_credits(fee)})."
        if action == "confirm":
            return f"Deal {did} completed: {paid}"
        return f"Deal {did} completed automatically (the buyer neither confirmed nor disputed): {paid}"
    if action == "cancel_request":
        return (
            f"Deal {did}: {deal['cancel_requested_by']} asks to cancel. The other party "
            "cancels too to refund the buyer."
        )
    if action == "cancel":
        return f"Deal {did} cancelled." + (f" {amount} returned to {buyer}." if deal.get("_refunded") else "")
    if action == "expire":
        return f"Deal {did} cancelled: it was not funded in time."
    if action == "dispute":
        return f"Deal {did} disputed: the credits stay in escrow until a moderator decides."
    if action == "resolve":
        return f"Deal {did} resolved by a moderator."
    return f"Deal {did}: {action}, now {deal['state']}."


def deal_event_content(deal: dict[str, Any], action: str) -> dict[str, Any]:
    content: dict[str, Any] = {
        "msgtype": DEAL,
        "body": _body(deal, action),
        "deal_id": deal["deal_id"],
        "listing_id": deal["listing_id"],
        "offer_id": deal["offer_id"],
        "action": action,
        "state": deal["state"],
        "buyer": deal["buyer"],
        "seller": deal["seller"],
        "amount": int(deal["amount"]),
        "quantity": int(deal["quantity"]),
    }
    if deal.get("fee") is not None:
        content["fee"] = int(deal["fee"])
    if deal.get("due_ts") is not None and not is_final(deal["state"]):
        content["due_ts"] = int(deal["due_ts"])
    return content


def check_id(deal_id: object) -> str:
    if not isinstance(deal_id, str) or not 0 < len(deal_id) <= MAX_ID or "\x00" in deal_id:
        raise not_found(f"no deal {deal_id}")
    return deal_id


def may_see(actor: Actor, buyer: str, seller: str) -> bool:
    return actor.principal_id in (buyer, seller) or actor.is_staff


# Built once: get_deal runs after every deal step a client takes through an offer.
_DEAL_WITH_TITLE = (
    select(deals, listings.c.title)
    .select_from(deals.outerjoin(listings, listings.c.listing_id == deals.c.listing_id))
    .where(deals.c.deal_id == bindparam("deal_id"))
)
_TRANSITIONS = (
    select(deal_transitions)
    .where(deal_transitions.c.deal_id == bindparam("deal_id"))
    .order_by(deal_transitions.c.seq)
)
_DISPUTE = select(disputes).where(disputes.c.deal_id == bindparam("deal_id"))


async def get_deal(svc: Services, actor: Actor, deal_id: str) -> dict[str, Any]:
    """A deal with its transitions (and its dispute, if any): parties and staff only, else 404."""
    check_id(deal_id)
    params = {"deal_id": deal_id}
    async with svc.db.read() as conn:
        row = (await conn.execute(_DEAL_WITH_TITLE, params)).first()
        if row is None or not may_see(actor, row.buyer, row.seller):
            raise not_found(f"no deal {deal_id}")
        steps = (await conn.execute(_TRANSITIONS, params)).all()
        dispute = (await conn.execute(_DISPUTE, params)).first() if row.state != DealState.AGREED else None
    out = deal_dict(row)
    out["title"] = row.title
    out["transitions"] = [
        {
            "seq": int(s.seq),
            "from_state": s.from_state,
            "to_state": s.to_state,
            "actor": s.actor,
            "event_id": s.event_id,
            "note": s.note,
            "ts": int(s.ts),
        }
        for s in steps
    ]  # the fields of TRANSITION_FIELDS
    out["dispute"] = (
        {k: v for k, v in dict(dispute._mapping).items() if k != "deal_id"} if dispute is not None else None
    )
    return out


async def list_deals(
    svc: Services,
    actor: Actor,
    *,
    state: str | None = None,
    role: str | None = None,
    limit: int | None = None,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """The actor's deals, newest first (staff: every deal, or `role` filters nothing for them).
    `role`: buyer | seller. `before`: the `deal_id` of the last deal of the previous page."""
    if state is not None and state not in {s.value for s in DealState}:
        raise bad_request(f"state must be one of {', '.join(s.value for s in DealState)}")
    if role is not None and role not in ("buyer", "seller"):
        raise bad_request("role must be buyer or seller")
    size = svc.settings.default_page_size if limit is None else limit
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise bad_request("limit must be a positive integer")
    size = min(size, svc.settings.max_page_size)
    me = actor.principal_id
    query = select(deals, listings.c.title).select_from(
        deals.outerjoin(listings, listings.c.listing_id == deals.c.listing_id)
    )
    if role == "buyer":
        query = query.where(deals.c.buyer == me)
    elif role == "seller":
        query = query.where(deals.c.seller == me)
    elif not actor.is_staff:
        query = query.where(or_(deals.c.buyer == me, deals.c.seller == me))
    if state is not None:
        query = query.where(deals.c.state == state)
    async with svc.db.read() as conn:
        if before is not None:
            anchor = (
                await conn.execute(select(deals.c.created_ts).where(deals.c.deal_id == check_id(before)))
            ).scalar()
            if anchor is None:
                raise bad_request("before must be the deal_id of a deal from the previous page")
            query = query.where(
                or_(
                    deals.c.created_ts < anchor,
                    and_(deals.c.created_ts == anchor, deals.c.deal_id < before),
                )
            )
        rows = (
            await conn.execute(query.order_by(deals.c.created_ts.desc(), deals.c.deal_id.desc()).limit(size))
        ).all()
    return [{**deal_dict(r), "title": r.title} for r in rows]


__all__ = [
    "MAX_ID",
    "TRANSITION_FIELDS",
    "check_id",
    "deal_dict",
    "deal_event_content",
    "get_deal",
    "list_deals",
    "may_see",
]
