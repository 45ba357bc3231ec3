"""Slash-command references: the listing, offer or deal id a typed prefix (or, in a DM, none) names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from clawlist.actions.actor import Actor
from clawlist.actions.market.command_replies import short
from clawlist.actions.services import Services
from clawlist.core.deal_states import DealState
from clawlist.core.errors import ClawlistError
from clawlist.core.money import format_credits
from clawlist.storage.tables import deals, feedback, listings, offers


@dataclass(frozen=True)
class CommandContext:
    """Who typed the command, and where: `me` is the actor's user id, `event_id` the command's event."""

    svc: Services
    actor: Actor
    me: str
    room_id: str
    event_id: str


class NoRef(ClawlistError):
    """No row matches the reference (404): for commands whose first word may be text instead."""


async def lookup(
    ctx: CommandContext,
    column: Any,
    ref: str,
    visible: ColumnElement[bool] | None,
    what: str,
    event_ids: bool,
) -> str:
    """The id `ref` names in `column`: the exact id, or the one id starting with it."""
    full = [f"${ref}", ref] if event_ids else [ref]
    prefixes = [func.substr(column, 1, len(p)) == p for p in full]
    if ctx.svc.db.is_sqlite:
        # SQLite compares text bytewise: the ids starting with p are the range [p, p+1), which the
        # primary key index finds (PostgreSQL's collation may order otherwise: substr alone there)
        prefixes = [
            and_(column >= p, column < next_prefix(p), cond) for p, cond in zip(full, prefixes, strict=True)
        ]
    query = select(column).where(or_(*prefixes))
    if visible is not None:
        query = query.where(visible)
    async with ctx.svc.db.read() as conn:
        exact = (await conn.execute(select(column).where(column.in_(full)))).scalars().first()
        if exact is not None:
            return str(exact)
        found = [str(v) for v in (await conn.execute(query.limit(5))).scalars().all()]
    if not found:
        raise NoRef(404, "M_NOT_FOUND", f"no {what} '{ref}'")
    if len(found) > 1:
        raise ClawlistError(
            400,
            "CL_AMBIGUOUS_REF",
            f"'{ref}' matches several {what}s ({', '.join(f.removeprefix('$')[:16] for f in found)}); "
            "give more characters",
        )
    return found[0]


def next_prefix(prefix: str) -> str:
    """The smallest string above every string starting with `prefix` (ASCII references)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def is_party(table: Any, me: str) -> ColumnElement[bool]:
    return or_(table.c.buyer == me, table.c.seller == me)


async def find_listing(ctx: CommandContext, ref: str) -> str:
    return await lookup(ctx, listings.c.listing_id, ref, None, "listing", True)


async def find_offer(
    ctx: CommandContext, ref: str | None, text_if_no_ref: str | None = None
) -> tuple[str, str | None]:
    """(offer id, the text to use when the first word was not an offer after all)."""
    if ref is not None:
        try:
            return await lookup(ctx, offers.c.offer_id, ref, is_party(offers, ctx.me), "offer", True), None
        except NoRef as missing:
            # "/reject too expensive": the first word was text, not a reference
            if text_if_no_ref is None:
                raise
            try:
                return await only_open_offer(ctx), text_if_no_ref
            except ClawlistError:
                raise NoRef(
                    404,
                    "M_NOT_FOUND",
                    f"{missing.message} (if '{ref}' was meant as text, name the offer first: "
                    f"/reject <offer> {text_if_no_ref})",
                ) from None
    return await only_open_offer(ctx), None


async def only_open_offer(ctx: CommandContext) -> str:
    """The one open offer made to me in this room (a DM), when the command names none."""
    async with ctx.svc.db.read() as conn:
        rows = (
            await conn.execute(
                select(offers.c.offer_id, offers.c.amount)
                .where(
                    and_(
                        offers.c.room_id == ctx.room_id, offers.c.to_agent == ctx.me, offers.c.state == "open"
                    )
                )
                .order_by(offers.c.created_ts.desc())
                .limit(6)
            )
        ).all()
    if len(rows) == 1:
        return str(rows[0].offer_id)
    if not rows:
        raise ClawlistError(
            400, "CL_NO_REF", "name the offer: there is no open offer to you in this room (see your DMs)"
        )
    listed = ", ".join(f"{short(r.offer_id)} ({format_credits(int(r.amount))})" for r in rows)
    raise ClawlistError(400, "CL_AMBIGUOUS_REF", f"name the offer: several are open here: {listed}")


#: The states of the deal a step can act on, for finding it when the command names none.
STEP_STATES = {
    "fund": (DealState.AGREED,),
    "delivered": (DealState.FUNDED,),
    "confirm": (DealState.DELIVERED,),
    "cancel": (DealState.AGREED, DealState.FUNDED),
    "dispute": (DealState.FUNDED, DealState.DELIVERED),
    "feedback": (DealState.COMPLETED, DealState.RESOLVED),
}


async def find_deal(
    ctx: CommandContext, step: str, ref: str | None, text_if_no_ref: str | None = None
) -> tuple[str, str | None]:
    """(deal id, the text to use when the first word was not a deal after all)."""
    if ref is not None:
        try:
            return await lookup(ctx, deals.c.deal_id, ref, is_party(deals, ctx.me), "deal", False), None
        except NoRef as missing:
            # "/delivered shipped today": the first word was text, not a reference
            if text_if_no_ref is None:
                raise
            try:
                return await only_deal(ctx, step), text_if_no_ref
            except ClawlistError:
                raise NoRef(
                    404,
                    "M_NOT_FOUND",
                    f"{missing.message} (if '{ref}' was meant as text, name the deal first: "
                    f"/{step} <deal> {text_if_no_ref})",
                ) from None
    return await only_deal(ctx, step), None


async def only_deal(ctx: CommandContext, step: str) -> str:
    """The one deal of mine in this room (a DM) that `step` could mean, when the command names none."""
    states = [s.value for s in STEP_STATES[step]]
    mover = {"fund": deals.c.buyer, "confirm": deals.c.buyer, "delivered": deals.c.seller}.get(step)
    party = mover == ctx.me if mover is not None else is_party(deals, ctx.me)
    query = (
        select(deals.c.deal_id, deals.c.state, deals.c.amount)
        .where(and_(deals.c.room_id == ctx.room_id, party, deals.c.state.in_(states)))
        .order_by(deals.c.created_ts.desc())
        .limit(6)
    )
    if step == "feedback":
        mine = select(feedback.c.deal_id).where(feedback.c.rater == ctx.me)
        query = query.where(deals.c.deal_id.not_in(mine))
    async with ctx.svc.db.read() as conn:
        rows = (await conn.execute(query)).all()
    if len(rows) == 1:
        return str(rows[0].deal_id)
    if not rows:
        raise ClawlistError(
            400,
            "CL_NO_REF",
            f"name the deal: none of your deals in this room can take /{step} now (see /deals)",
        )
    listed = ", ".join(f"{short(r.deal_id)} ({r.state}, {format_credits(int(r.amount))})" for r in rows)
    raise ClawlistError(400, "CL_AMBIGUOUS_REF", f"name the deal: several could be meant here: {listed}")


__all__ = [
    "STEP_STATES",
    "CommandContext",
    "NoRef",
    "find_deal",
    "find_listing",
    "find_offer",
    "is_party",
    "lookup",
    "next_prefix",
    "only_deal",
    "only_open_offer",
]
