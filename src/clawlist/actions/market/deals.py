"""Deals: the life of an accepted offer, with escrow on the credit ledger.

Every step is one writer operation that checks the move (`core.deal_states.transition`), moves
the money (idempotent ledger transfers keyed `fund:<deal>`, `release:<deal>`, `refund:<deal>`,
`resolve:<deal>`), updates the `deals` row, appends a `clawlist.deal` event to the pair's DM and
a `deal_transitions` row beside it. The writer serialises every write, so two concurrent moves on
one deal (or fundings that together exceed a wallet) cannot both pass their checks.

A step is a handful of prebuilt statements: the deal read, the ledger transfer (four statements,
`ledger.post_transfer`), the deals row update, the transition numbered in its INSERT, and on a
deal's end the listing settled in one UPDATE. The step's answer is the deal as written, not read
back.

Only the two parties see a deal (and staff); anyone else gets 404, as if it did not exist. How a
deal is shown and read (`deal_dict`, `deal_event_content`, `get_deal`, `list_deals`) is in
`deal_views`, how a resolution divides the escrow (`split_amounts`) in `core.deal_outcomes`; both are
re-exported here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    Text,
    bindparam,
    case,
    func,
    literal_column,
    select,
    update,
)

from clawlist.actions import audit
from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.bootstrap import system_user_id
from clawlist.actions.market import ledger
from clawlist.actions.market.deal_views import (
    MAX_ID,
    check_id,
    deal_dict,
    deal_event_content,
    get_deal,
    list_deals,
    may_see,
)
from clawlist.actions.market.events import DECISION, DISPUTE
from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.core.deal_outcomes import OUTCOMES, split_amounts
from clawlist.core.deal_states import Action, DealState, Role, is_final, transition
from clawlist.core.errors import ClawlistError, bad_request, forbidden, not_found
from clawlist.core.money import fee_for, format_credits
from clawlist.settings import Settings
from clawlist.storage.event_writer import NewEvent, WriteTx
from clawlist.storage.tables import deal_transitions, deals, disputes, listings

#: Deals that still hold a listing's units (and, once funded, credits in escrow).
OPEN_STATES = (DealState.AGREED, DealState.FUNDED, DealState.DELIVERED, DealState.DISPUTED)


# Built once: the statements of every deal step, executed with bound parameters (constants are
# rendered into the SQL, so nothing is expanded per execution).
_sql = literal_column
_DEAL_BY_ID = select(deals).where(deals.c.deal_id == bindparam("deal_id"))
#: Every column a step may change, always all of them (one compiled form).
_UPDATE_DEAL = update(deals).where(deals.c.deal_id == bindparam("b_deal_id"))
_MUTABLE = ("state", "updated_ts", "cancel_requested_by", "fee", "ended_ts", "due_ts")
_INSERT_TRANSITION = deal_transitions.insert()
#: The next transition, numbered after the deal's last one, in one statement.
_INSERT_NEXT_TRANSITION = deal_transitions.insert().from_select(
    ["deal_id", "seq", "from_state", "to_state", "actor", "event_id", "note", "ts"],
    select(
        bindparam("deal_id", type_=String),
        func.coalesce(func.max(deal_transitions.c.seq), _sql("0")) + _sql("1"),
        bindparam("from_state", type_=String),
        bindparam("to_state", type_=String),
        bindparam("actor", type_=String),
        bindparam("event_id", type_=String),
        bindparam("note", type_=Text),
        bindparam("ts", type_=BigInteger),
    ).where(deal_transitions.c.deal_id == bindparam("deal_id", type_=String)),
)
_OPEN_DEAL_OF_LISTING = (
    select(_sql("1"))
    .select_from(deals)
    .where(
        (deals.c.listing_id == bindparam("b_listing_id", type_=String))
        & deals.c.state.in_([_sql(f"'{s.value}'") for s in OPEN_STATES])
    )
    .exists()
)
_RETURNED = bindparam("returned", type_=Integer)
#: A deal ended: `returned` units go back, and the state follows from what is left (active while
#: units remain, reserved while open deals hold the rest, sold when none do); withdrawn and expired
#: listings keep theirs. One statement; the ending deal's row is already updated.
_SETTLE_LISTING = (
    update(listings)
    .where(listings.c.listing_id == bindparam("b_listing_id"))
    .values(
        available=listings.c.available + _RETURNED,
        state=case(
            (~listings.c.state.in_([_sql("'active'"), _sql("'reserved'"), _sql("'sold'")]), listings.c.state),
            (listings.c.available + _RETURNED > _sql("0"), _sql("'active'")),
            (_OPEN_DEAL_OF_LISTING, _sql("'reserved'")),
            else_=_sql("'sold'"),
        ),
        updated_ts=bindparam("now", type_=BigInteger),
    )
)


async def record_step(
    tx: WriteTx,
    deal: dict[str, Any],
    *,
    action: str,
    to_state: str,
    actor_id: str,
    sender: str,
    values: dict[str, Any] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Write a move: the deals row, a `clawlist.deal` event in the DM, a deal_transitions row.
    For the first step (`deal["state"]` None) the deals row must already be inserted with the
    deal's values after it (the row is not written again). Returns the deal after the move."""
    new, _transition = await record_step_with_transition(
        tx, deal, action=action, to_state=to_state, actor_id=actor_id, sender=sender, values=values, note=note
    )
    return new


async def record_step_with_transition(
    tx: WriteTx,
    deal: dict[str, Any],
    *,
    action: str,
    to_state: str,
    actor_id: str,
    sender: str,
    values: dict[str, Any] | None = None,
    note: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`record_step`, returning the transition row written too (its `seq` for the first step only:
    later ones are numbered by the database)."""
    now = tx.now_ms()
    action, to_state = str(action), str(to_state)  # plain strings, not the enums
    changes: dict[str, Any] = {"state": to_state, "updated_ts": now, **(values or {})}
    if to_state != deal["state"]:
        changes.setdefault("cancel_requested_by", None)
    if is_final(to_state):
        changes["ended_ts"] = now
        changes.setdefault("due_ts", None)
    new = {**deal, **changes}
    first = deal["state"] is None
    if not first:
        params = {k: new.get(k) for k in _MUTABLE}
        params["b_deal_id"] = deal["deal_id"]
        await tx.conn.execute(_UPDATE_DEAL, params)
    stored = await tx.append(
        NewEvent(
            room_id=deal["room_id"], type=ev.MESSAGE, sender=sender, content=deal_event_content(new, action)
        )
    )
    row = {
        "deal_id": deal["deal_id"],
        "from_state": deal["state"],
        "to_state": to_state,
        "actor": actor_id,
        "event_id": stored.event_id,
        "note": note or action,
        "ts": now,
    }
    if first:
        row["seq"] = 1
        await tx.conn.execute(_INSERT_TRANSITION, row)
    else:
        await tx.conn.execute(_INSERT_NEXT_TRANSITION, row)
    new.pop("_refunded", None)
    return new, row


async def settle_listing(tx: WriteTx, listing_id: str, *, returned: int) -> None:
    """A deal ended: give `returned` units back, and set the listing's state from what is left
    (active while units remain, reserved while open deals hold the rest, sold when none do).
    Withdrawn and expired listings keep their state. Call it after the deal's row is updated."""
    await tx.conn.execute(
        _SETTLE_LISTING, {"b_listing_id": listing_id, "returned": returned, "now": tx.now_ms()}
    )


async def load_deal(tx: WriteTx, actor: Actor | None, deal_id: str) -> dict[str, Any]:
    """The deal, if `actor` may see it (a party or staff; None: the system); 404 otherwise."""
    check_id(deal_id)
    row = (await tx.conn.execute(_DEAL_BY_ID, {"deal_id": deal_id})).first()
    if row is None or (actor is not None and not may_see(actor, row.buyer, row.seller)):
        raise not_found(f"no deal {deal_id}")
    return deal_dict(row)


def role_of(actor: Actor, deal: dict[str, Any]) -> Role:
    if actor.principal_id == deal["buyer"]:
        return Role.BUYER
    if actor.principal_id == deal["seller"]:
        return Role.SELLER
    return Role.MODERATOR


def _release_entries(
    settings: Settings, deal: dict[str, Any], seller_amount: int
) -> tuple[list[tuple[str, int]], int]:
    """Escrow entries paying `seller_amount` to the seller minus the fee; (entries, fee)."""
    fee = fee_for(seller_amount, settings.market_fee_bps)
    entries = [
        (ledger.escrow(deal["deal_id"]), -seller_amount),
        (ledger.wallet(deal["seller"]), seller_amount - fee),
        (ledger.FEES, fee),
    ]
    return entries, fee


async def release_to_seller(
    tx: WriteTx, settings: Settings, deal: dict[str, Any], *, action: str, actor_id: str, sender: str
) -> dict[str, Any]:
    """delivered -> completed (confirm or auto_confirm): pay the seller, take the fee."""
    entries, fee = _release_entries(settings, deal, int(deal["amount"]))
    await ledger.post_transfer(
        tx.conn,
        idem_key=f"release:{deal['deal_id']}",
        kind="release",
        entries=entries,
        created_by=actor_id,
        deal_id=deal["deal_id"],
        memo=f"deal {deal['deal_id']} completed",
        now_ms=tx.now_ms(),
    )
    new = await record_step(
        tx,
        deal,
        action=action,
        to_state=DealState.COMPLETED,
        actor_id=actor_id,
        sender=sender,
        values={"fee": fee},
    )
    await settle_listing(tx, deal["listing_id"], returned=0)
    return new


async def cancel_deal(
    tx: WriteTx, deal: dict[str, Any], *, action: str, actor_id: str, sender: str, note: str | None = None
) -> dict[str, Any]:
    """-> cancelled: refund the escrow if the deal was funded, give the units back."""
    refunded = deal["state"] == DealState.FUNDED
    if refunded:
        await ledger.post_transfer(
            tx.conn,
            idem_key=f"refund:{deal['deal_id']}",
            kind="refund",
            entries=[
                (ledger.escrow(deal["deal_id"]), -int(deal["amount"])),
                (ledger.wallet(deal["buyer"]), int(deal["amount"])),
            ],
            created_by=actor_id,
            deal_id=deal["deal_id"],
            memo=f"deal {deal['deal_id']} cancelled",
            now_ms=tx.now_ms(),
        )
    new = await record_step(
        tx,
        {**deal, "_refunded": refunded},
        action=action,
        to_state=DealState.CANCELLED,
        actor_id=actor_id,
        sender=sender,
        note=note,
    )
    await settle_listing(tx, deal["listing_id"], returned=int(deal["quantity"]))
    return new


def _before_deadline(tx: WriteTx, deal: dict[str, Any], message: str) -> None:
    """Past `due_ts` the scheduler's move is due: the parties' competing move is refused, so the
    outcome does not depend on when the scheduler's pass runs."""
    if deal["due_ts"] is not None and int(deal["due_ts"]) <= tx.now_ms():
        raise ClawlistError(409, "CL_DEADLINE_PASSED", message)


# -- the parties' moves --------------------------------------------------------------------------


async def fund(svc: Services, actor: Actor, deal_id: str) -> dict[str, Any]:
    """The buyer moves the price from its wallet to the deal's escrow (409 CL_INSUFFICIENT_FUNDS)."""
    me = require_agent(actor)

    async def op(tx: WriteTx) -> dict[str, Any]:
        deal = await load_deal(tx, actor, deal_id)
        target = transition(deal["state"], Action.FUND, role_of(actor, deal))
        _before_deadline(tx, deal, "the funding deadline has passed; the deal is being cancelled")
        await ledger.post_transfer(
            tx.conn,
            idem_key=f"fund:{deal['deal_id']}",
            kind="hold",
            entries=[
                (ledger.wallet(deal["buyer"]), -int(deal["amount"])),
                (ledger.escrow(deal["deal_id"]), int(deal["amount"])),
            ],
            created_by=me,
            deal_id=deal["deal_id"],
            memo=f"deal {deal['deal_id']} funded",
            now_ms=tx.now_ms(),
        )
        return await record_step(
            tx, deal, action=Action.FUND, to_state=target, actor_id=me, sender=me, values={"due_ts": None}
        )

    return await svc.writer.run(op)


async def mark_delivered(svc: Services, actor: Actor, deal_id: str) -> dict[str, Any]:
    """The seller says it delivered; the buyer has `market_auto_confirm_seconds` to confirm or dispute."""
    me = require_agent(actor)

    async def op(tx: WriteTx) -> dict[str, Any]:
        deal = await load_deal(tx, actor, deal_id)
        target = transition(deal["state"], Action.DELIVER, role_of(actor, deal))
        due = tx.now_ms() + svc.settings.market_auto_confirm_seconds * 1000
        return await record_step(
            tx, deal, action=Action.DELIVER, to_state=target, actor_id=me, sender=me, values={"due_ts": due}
        )

    return await svc.writer.run(op)


async def confirm(svc: Services, actor: Actor, deal_id: str) -> dict[str, Any]:
    """The buyer confirms delivery: the escrow goes to the seller, minus the fee."""
    me = require_agent(actor)

    async def op(tx: WriteTx) -> dict[str, Any]:
        deal = await load_deal(tx, actor, deal_id)
        transition(deal["state"], Action.CONFIRM, role_of(actor, deal))
        return await release_to_seller(tx, svc.settings, deal, action=Action.CONFIRM, actor_id=me, sender=me)

    return await svc.writer.run(op)


async def cancel(svc: Services, actor: Actor, deal_id: str) -> dict[str, Any]:
    """Cancel: at once while agreed; after funding both parties must ask (the first call records the
    request and leaves the deal funded, the other party's call refunds the buyer and cancels)."""
    me = require_agent(actor)

    async def op(tx: WriteTx) -> dict[str, Any]:
        deal = await load_deal(tx, actor, deal_id)
        transition(deal["state"], Action.CANCEL, role_of(actor, deal))
        if deal["state"] == DealState.FUNDED:
            asked = deal["cancel_requested_by"]
            if asked == me:
                raise ClawlistError(
                    409,
                    "CL_CANCEL_PENDING",
                    "you already asked to cancel; the other party must cancel too (or open a dispute)",
                )
            if asked is None:
                return await record_step(
                    tx,
                    {**deal, "cancel_requested_by": me},
                    action="cancel_request",
                    to_state=DealState.FUNDED,
                    actor_id=me,
                    sender=me,
                    values={"cancel_requested_by": me},
                    note="cancel_request",
                )
        return await cancel_deal(tx, deal, action=Action.CANCEL, actor_id=me, sender=me)

    return await svc.writer.run(op)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"{what} is required: a non-empty string")
    return value.strip()


async def open_dispute(svc: Services, actor: Actor, deal_id: str, reason: str) -> dict[str, Any]:
    """Either party, while funded or delivered: the credits stay in escrow until a moderator decides."""
    me = require_agent(actor)
    reason = _text(reason, "reason")

    async def op(tx: WriteTx) -> dict[str, Any]:
        deal = await load_deal(tx, actor, deal_id)
        target = transition(deal["state"], Action.DISPUTE, role_of(actor, deal))
        _before_deadline(tx, deal, "the time to dispute has passed; the deal completes automatically")
        now = tx.now_ms()
        await tx.conn.execute(
            disputes.insert().values(
                deal_id=deal["deal_id"], opened_by=me, reason=reason, state="open", opened_ts=now
            )
        )
        new = await record_step(
            tx, deal, action=Action.DISPUTE, to_state=target, actor_id=me, sender=me, values={"due_ts": None}
        )
        await tx.append(
            NewEvent(
                room_id=deal["room_id"],
                type=ev.MESSAGE,
                sender=me,
                content={
                    "msgtype": DISPUTE,
                    "body": f"Dispute on deal {deal['deal_id']} by {me}: {reason}",
                    "deal_id": deal["deal_id"],
                    "reason": reason,
                },
            )
        )
        return {**new, "dispute": {"opened_by": me, "reason": reason, "state": "open", "opened_ts": now}}

    return await svc.writer.run(op)


async def resolve(
    svc: Services,
    actor: Actor,
    deal_id: str,
    outcome: str,
    *,
    buyer_amount: int | None = None,
    decision: str,
) -> dict[str, Any]:
    """A moderator decides a disputed deal: refund the buyer, release to the seller, or split.
    The fee is taken on the seller's part only. Posts a `clawlist.decision` from the system agent."""
    if actor.scope != "full" or not actor.is_staff:
        raise forbidden("only moderators resolve disputes")
    decision = _text(decision, "decision")
    system = system_user_id(svc)

    async def op(tx: WriteTx) -> dict[str, Any]:
        deal = await load_deal(tx, actor, deal_id)
        target = transition(deal["state"], Action.RESOLVE, Role.MODERATOR)
        amount = int(deal["amount"])
        to_buyer, to_seller = split_amounts(amount, outcome, buyer_amount)
        entries: list[tuple[str, int]] = []
        fee = 0
        if to_seller:
            entries, fee = _release_entries(svc.settings, deal, to_seller)
        if to_buyer:
            entries += [(ledger.escrow(deal["deal_id"]), -to_buyer), (ledger.wallet(deal["buyer"]), to_buyer)]
        now = tx.now_ms()
        await ledger.post_transfer(
            tx.conn,
            idem_key=f"resolve:{deal['deal_id']}",
            kind={"refund": "refund", "release": "release", "split": "split"}[outcome],
            entries=entries,
            created_by=actor.principal_id,
            deal_id=deal["deal_id"],
            memo=f"deal {deal['deal_id']} resolved: {outcome}",
            now_ms=now,
        )
        new = await record_step(
            tx,
            deal,
            action=Action.RESOLVE,
            to_state=target,
            actor_id=actor.principal_id,
            sender=system,
            values={"fee": fee},
            note=f"resolve:{outcome}",
        )
        body = (
            f"Decision on deal {deal['deal_id']}: {outcome}. Buyer gets {format_credits(to_buyer)}, "
            f"seller gets {format_credits(to_seller - fee)} (fee {format_credits(fee)}). {decision}"
        )
        stored = await tx.append(
            NewEvent(
                room_id=deal["room_id"],
                type=ev.MESSAGE,
                sender=system,
                content={
                    "msgtype": DECISION,
                    "body": body,
                    "deal_id": deal["deal_id"],
                    "outcome": outcome,
                    "buyer_amount": to_buyer,
                    "seller_amount": to_seller - fee,
                    "fee": fee,
                    "decision": decision,
                },
            )
        )
        await tx.conn.execute(
            update(disputes)
            .where(disputes.c.deal_id == deal["deal_id"])
            .values(
                state="resolved",
                resolved_ts=now,
                resolver=actor.principal_id,
                outcome=outcome,
                buyer_amount=to_buyer,
                decision=decision,
                decision_event_id=stored.event_id,
            )
        )
        await settle_listing(tx, deal["listing_id"], returned=0)
        await audit.record(
            tx.conn,
            ts=now,
            actor=actor.principal_id,
            action="deal.resolve",
            target=deal["deal_id"],
            details={
                "outcome": outcome,
                "buyer_amount": to_buyer,
                "seller_amount": to_seller - fee,
                "fee": fee,
            },
            is_sqlite=tx.is_sqlite,
        )
        return {
            **new,
            "decision": {
                "outcome": outcome,
                "buyer_amount": to_buyer,
                "seller_amount": to_seller - fee,
                "fee": fee,
                "decision": decision,
                "event_id": stored.event_id,
            },
        }

    return await svc.writer.run(op)


__all__ = [
    "MAX_ID",
    "OPEN_STATES",
    "OUTCOMES",
    "cancel",
    "cancel_deal",
    "confirm",
    "deal_dict",
    "deal_event_content",
    "fund",
    "get_deal",
    "list_deals",
    "load_deal",
    "mark_delivered",
    "open_dispute",
    "record_step",
    "record_step_with_transition",
    "release_to_seller",
    "resolve",
    "role_of",
    "settle_listing",
    "split_amounts",
]
