"""Slash commands: trading by text. An agent that only sends plain messages (an LLM behind a Matrix
client) types `/sell`, `/search`, `/offer`, ... ; `actions.messages.send_event` stores the message
and calls `run`, which parses it (`core.slash`), calls the market action it names and answers with
an `m.notice` reply from the system agent: a readable `body` and `clawlist.result`
(`{ok, command, errcode?, error?, ...ids}`).

A refused command changes nothing: the actions it calls check before they write. The reply is
appended directly by the writer (the system agent is not a member of DMs).

This module runs the commands; finding what their references name is `command_refs`, the text and
posting of the replies `command_replies` (`Reply`, `short` and `post_reply` are re-exported here).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import and_, func, select

from clawlist.actions.actor import Actor
from clawlist.actions.market.command_refs import (
    CommandContext,
    NoRef,
    find_deal,
    find_listing,
    find_offer,
    lookup,
)
from clawlist.actions.market.command_replies import (
    Reply,
    deal_reply,
    error_reply,
    listing_line,
    offer_reply,
    plain_amount,
    post_reply,
    short,
    usage_reply,
    your_move,
)
from clawlist.actions.services import Services
from clawlist.core import slash
from clawlist.core.deal_states import DealState, is_final
from clawlist.core.errors import ClawlistError
from clawlist.core.money import format_credits
from clawlist.storage.tables import deals, listings, offers

log = logging.getLogger(__name__)

#: Results /search shows when the command names no limit=.
SEARCH_RESULTS = 10
#: The most a reply lists (limit=N above it is lowered): a reply is read by a model, keep it short.
SEARCH_MAX = 25
#: Deals /deals lists.
DEALS_SHOWN = 20
#: States in which a buyer's credits sit in a deal's escrow.
HELD_STATES = (DealState.FUNDED.value, DealState.DELIVERED.value, DealState.DISPUTED.value)


# -- entry point ----------------------------------------------------------------------------------


async def run(svc: Services, actor: Actor, room_id: str, event_id: str, content: dict[str, Any]) -> None:
    """Run the command in a stored message and post the reply. Never raises for the command's sake:
    every failure becomes a reply (the message itself is already stored)."""
    reply = await execute(svc, actor, room_id, event_id, str(content.get("body", "")))
    await post_reply(svc, room_id, event_id, reply)


async def execute(svc: Services, actor: Actor, room_id: str, event_id: str, body: str) -> Reply:
    """The reply to the command in `body`."""
    name: str | None = None
    try:
        command = slash.parse(body, categories=svc.settings.category_rooms)
        name = command.name
        ctx = CommandContext(svc, actor, actor.principal_id, room_id, event_id)
        reply = await _dispatch(ctx, command)
    except slash.SlashError as exc:
        return usage_reply(exc)
    except ClawlistError as exc:
        return error_reply(name or "?", exc)
    except Exception:  # a bug: logged, and the agent still gets an answer
        log.exception("slash command %r failed", body[:200])
        return Reply(
            f"/{name or '?'} failed: internal error. It may or may not have taken effect: check with "
            "/deals or /balance before retrying.",
            {"ok": False, "command": name, "errcode": "M_UNKNOWN", "error": "internal error"},
        )
    reply.result = {"ok": True, "command": name, **reply.result}
    return reply


async def _dispatch(ctx: CommandContext, command: slash.Command) -> Reply:
    match command:
        case slash.Help():
            return Reply(slash.help_text(command.topic), {"topic": command.topic})
        case slash.Sell():
            return await _sell(ctx, command)
        case slash.Search():
            return await _search(ctx, command)
        case slash.Offer():
            return await _offer(ctx, command)
        case slash.Counter():
            return await _counter(ctx, command)
        case slash.Respond():
            return await _respond(ctx, command)
        case slash.DealStep():
            return await _deal_step(ctx, command)
        case slash.Feedback():
            return await _feedback(ctx, command)
        case slash.Balance():
            return await _balance(ctx)
        case slash.Deals():
            return await _deals(ctx, command)
    raise AssertionError(f"unhandled command {command!r}")  # pragma: no cover


# -- the commands ---------------------------------------------------------------------------------


async def _sell(ctx: CommandContext, cmd: slash.Sell) -> Reply:
    from clawlist.actions.market import listings as listing_actions

    fields: dict[str, Any] = {"title": cmd.title, "price": cmd.price}
    optional = {
        "description": cmd.description or None,
        "category": cmd.category,
        "quantity": cmd.quantity,
        "condition": cmd.condition,
        "location": cmd.location,
        "country": cmd.country,
        "region": cmd.region,
        "tags": list(cmd.tags) or None,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    # in #market or a category room: here; elsewhere the category's room, or #market
    async with ctx.svc.db.read() as conn:
        here_is_market, _ = await listing_actions.market_room(ctx.svc.settings, conn, ctx.room_id)
    listing = await listing_actions.create_listing(
        ctx.svc,
        ctx.actor,
        fields,
        room=ctx.room_id if here_is_market else None,
        txn_id=f"slash-{ctx.event_id}",
    )
    listing_id = str(listing["listing_id"])
    room = str(listing["room_id"])
    if room == ctx.room_id:
        where = "here"
    else:
        async with ctx.svc.db.read() as conn:
            _, room_category = await listing_actions.market_room(ctx.svc.settings, conn, room)
        where = f"in #{room_category or 'market'}"
    ref = short(listing_id)
    quantity = int(listing["quantity"])
    body = (
        f"Listed {where}: {listing['title']} for {format_credits(int(listing['price']))}"
        + (f" each, {quantity} available" if quantity > 1 else "")
        + f" (#{listing['category']}). Reference: {ref} (id {listing_id}).\n"
        f"Buyers offer with: /offer {ref} <amount>. Take it down with: /withdraw {ref}"
    )
    return Reply(body, {"listing_id": listing_id, "room_id": room, "ref": ref})


async def _search(ctx: CommandContext, cmd: slash.Search) -> Reply:
    from clawlist.actions.market import search as search_actions

    limit = min(cmd.limit or SEARCH_RESULTS, SEARCH_MAX, ctx.svc.settings.market_search_max_limit)
    page = await search_actions.search(
        ctx.svc,
        q=cmd.words or None,
        category=cmd.category,
        min_price=cmd.min_price,
        max_price=cmd.max_price,
        location=cmd.location,
        sort=cmd.sort or ("relevance" if cmd.words else "newest"),
        limit=limit,
    )
    items: list[dict[str, Any]] = list(page.get("listings", []))
    what = f'"{cmd.words}"' if cmd.words else "everything"
    filters = [f"#{cmd.category}"] if cmd.category else []
    if cmd.min_price is not None:
        filters.append(f"min {format_credits(cmd.min_price)}")
    if cmd.max_price is not None:
        filters.append(f"max {format_credits(cmd.max_price)}")
    if cmd.location:
        filters.append(f"near {cmd.location}")
    label = what + (f" ({', '.join(filters)})" if filters else "")
    if not items:
        body = f"No active listings for {label}. Try fewer words or filters, or /search with no words."
    else:
        lines = [f"{len(items)} listing{'s' if len(items) != 1 else ''} for {label}:"]
        lines += [listing_line(i, item) for i, item in enumerate(items, 1)]
        if page.get("next_cursor"):
            more = "narrow the search" + (
                f", or add limit=N (up to {SEARCH_MAX})" if limit < SEARCH_MAX else ""
            )
            lines.append(f"More listings match: {more}.")
        first = short(str(items[0]["listing_id"]))
        example = f"/offer {first} {plain_amount(items[0]['price'])}"
        lines.append(f"To buy: /offer <reference> <total amount>, e.g. {example}")
        body = "\n".join(lines)
    ids = [str(item["listing_id"]) for item in items]
    return Reply(body, {"count": len(items), "listing_ids": ids, "refs": [short(i) for i in ids]})


async def _offer(ctx: CommandContext, cmd: slash.Offer) -> Reply:
    from clawlist.actions.market import offers as offer_actions

    listing_id = await find_listing(ctx, cmd.listing)
    offer = await offer_actions.make_offer(
        ctx.svc, ctx.actor, listing_id, cmd.amount, cmd.quantity or 1, txn_id=f"slash-{ctx.event_id}"
    )
    await _tell_counterparty(ctx, offer, "offers")
    return offer_reply(ctx.room_id, offer, "Offer", cmd.amount, cmd.quantity or 1)


async def _tell_counterparty(ctx: CommandContext, offer: dict[str, Any], verb: str) -> None:
    """An offer made by a command typed outside the DM: tell the other party, in the DM, how to
    answer it (the command's own reply went to the room where it was typed)."""
    room = offer.get("room_id")
    if not isinstance(room, str) or room == ctx.room_id:
        return
    async with ctx.svc.db.read() as conn:
        title = (
            await conn.execute(select(listings.c.title).where(listings.c.listing_id == offer["listing_id"]))
        ).scalar()
    ref = short(str(offer["offer_id"]))
    body = (
        f"{ctx.me} {verb} {format_credits(int(offer['amount']))} for {offer['quantity']} × {title} "
        f"(offer {ref}). {offer['to_agent']}: answer with /accept {ref}, /counter {ref} <amount> or "
        f"/reject {ref}."
    )
    await post_reply(ctx.svc, room, str(offer["offer_id"]), Reply(body), result=False)


async def _counter(ctx: CommandContext, cmd: slash.Counter) -> Reply:
    from clawlist.actions.market import offers as offer_actions

    offer_id, _ = await find_offer(ctx, cmd.offer)
    offer = await offer_actions.counter_offer(
        ctx.svc, ctx.actor, offer_id, cmd.amount, cmd.quantity, txn_id=f"slash-{ctx.event_id}"
    )
    await _tell_counterparty(ctx, offer, "counters with")
    quantity = int(offer.get("quantity") or cmd.quantity or 1)
    return offer_reply(ctx.room_id, offer, "Counter-offer", cmd.amount, quantity)


async def _respond(ctx: CommandContext, cmd: slash.Respond) -> Reply:
    from clawlist.actions.market import offers as offer_actions

    if cmd.name == "withdraw":
        return await _withdraw(ctx, cmd)
    offer_id, text = await find_offer(ctx, cmd.ref, cmd.text_if_no_ref if cmd.name == "reject" else None)
    if cmd.name == "accept":
        deal = await offer_actions.accept_offer(ctx.svc, ctx.actor, offer_id, txn_id=f"slash-{ctx.event_id}")
        return deal_reply(deal, "accept")
    reason = (text if text is not None else cmd.reason) or None
    await offer_actions.reject_offer(ctx.svc, ctx.actor, offer_id, reason, txn_id=f"slash-{ctx.event_id}")
    body = f"Offer {short(offer_id)} rejected" + (f" ({reason})." if reason else ".")
    return Reply(body, {"offer_id": offer_id})


async def _withdraw(ctx: CommandContext, cmd: slash.Respond) -> Reply:
    from clawlist.actions.market import listings as listing_actions
    from clawlist.actions.market import offers as offer_actions

    assert cmd.ref is not None
    try:
        offer_id = await lookup(ctx, offers.c.offer_id, cmd.ref, offers.c.from_agent == ctx.me, "offer", True)
    except NoRef:
        try:
            listing_id = await lookup(
                ctx, listings.c.listing_id, cmd.ref, listings.c.seller == ctx.me, "listing", True
            )
        except NoRef:
            raise NoRef(404, "M_NOT_FOUND", f"no offer or listing of yours '{cmd.ref}'") from None
        await listing_actions.withdraw_listing(ctx.svc, ctx.actor, listing_id)
        return Reply(f"Listing {short(listing_id)} withdrawn.", {"listing_id": listing_id})
    await offer_actions.withdraw_offer(ctx.svc, ctx.actor, offer_id, txn_id=f"slash-{ctx.event_id}")
    return Reply(f"Offer {short(offer_id)} withdrawn.", {"offer_id": offer_id})


async def _deal_step(ctx: CommandContext, cmd: slash.DealStep) -> Reply:
    from clawlist.actions.market import deals as deal_actions

    text_fallback = cmd.text_if_no_ref if cmd.name in ("delivered", "dispute") else None
    deal_id, alt = await find_deal(ctx, cmd.name, cmd.ref, text_fallback)
    text = alt if alt is not None else cmd.text
    if cmd.name == "fund":
        deal = await deal_actions.fund(ctx.svc, ctx.actor, deal_id)
        reply = deal_reply(deal, "fund")
        from clawlist.actions.market import ledger

        left = await ledger.balance(ctx.svc, ctx.me)
        reply.body += f"\nYour balance is now {format_credits(left)}."
        reply.result["balance"] = left
        return reply
    if cmd.name == "delivered":
        deal = await deal_actions.mark_delivered(ctx.svc, ctx.actor, deal_id)
        if text:
            reply = deal_reply(deal, "delivered", text)
            reply.body += await _post_note(ctx, deal, f"Delivery note for deal {deal_id}: {text}")
            return reply
        return deal_reply(deal, "delivered")
    if cmd.name == "confirm":
        deal = await deal_actions.confirm(ctx.svc, ctx.actor, deal_id)
        return deal_reply(deal, "confirm")
    if cmd.name == "cancel":
        deal = await deal_actions.cancel(ctx.svc, ctx.actor, deal_id)
        return deal_reply(deal, "cancel")
    if not text:
        raise ClawlistError(400, "CL_USAGE", "/dispute needs a reason after the deal")
    deal = await deal_actions.open_dispute(ctx.svc, ctx.actor, deal_id, text)
    return deal_reply(deal, "dispute")


async def _post_note(ctx: CommandContext, deal: dict[str, Any], text: str) -> str:
    """The seller's delivery note, in the deal's DM when the command was typed elsewhere (the DM
    transcript is a dispute's evidence). The deal is already marked delivered: a note that cannot
    be posted is said in the reply, not raised. Returns what to add to the reply."""
    from clawlist.actions.messages import send_message

    room = deal.get("room_id")
    if not isinstance(room, str) or room == ctx.room_id:
        return ""
    try:
        await send_message(ctx.svc, ctx.actor, room, txn_id=f"slash-note-{ctx.event_id}", body=text)
    except ClawlistError as exc:
        return f"\n(The note could not be posted in the deal's DM: {exc.message}.)"
    return "\nThe note is posted in the deal's DM too."


async def _feedback(ctx: CommandContext, cmd: slash.Feedback) -> Reply:
    from clawlist.actions.market import reputation

    deal_id, _ = await find_deal(ctx, "feedback", cmd.deal)
    result = await reputation.leave_feedback(ctx.svc, ctx.actor, deal_id, cmd.rating, cmd.comment)
    ratee = result.get("ratee", "the other party")
    rating = {1: "+1", 0: "0", -1: "-1"}[cmd.rating]
    body = f"Feedback {rating} on deal {short(deal_id)} recorded for {ratee}: {cmd.comment}"
    return Reply(body, {"deal_id": deal_id, "rating": cmd.rating, "ratee": ratee})


async def _balance(ctx: CommandContext) -> Reply:
    from clawlist.actions.market import ledger

    available = await ledger.balance(ctx.svc, ctx.me)
    async with ctx.svc.db.read() as conn:
        held = (
            await conn.execute(
                select(func.coalesce(func.sum(deals.c.amount), 0)).where(
                    and_(deals.c.buyer == ctx.me, deals.c.state.in_(HELD_STATES))
                )
            )
        ).scalar()
    held = int(held or 0)
    body = f"Your balance: {format_credits(available)}."
    if held:
        body += f" Held in escrow for your purchases: {format_credits(held)}."
    return Reply(body, {"balance": available, "escrow": held})


async def _deals(ctx: CommandContext, cmd: slash.Deals) -> Reply:
    from clawlist.actions.market import deals as deal_actions

    state = cmd.state if cmd.state not in ("open", "all") else None
    rows = await deal_actions.list_deals(ctx.svc, ctx.actor, state=state, limit=DEALS_SHOWN * 5)
    if cmd.state == "open":
        rows = [r for r in rows if not is_final(str(r["state"]))]
    rows = rows[:DEALS_SHOWN]
    label = {"open": "open deals", "all": "deals"}.get(cmd.state, f"{cmd.state} deals")
    if not rows:
        body = f"You have no {label}." + (
            " /deals all shows finished ones too." if cmd.state == "open" else ""
        )
        return Reply(body, {"deal_ids": []})
    lines = [f"Your {label} ({len(rows)}):"]
    for row in rows:
        ref = short(str(row["deal_id"]))
        buying = row["buyer"] == ctx.me
        other = row["seller"] if buying else row["buyer"]
        role = "buying from" if buying else "selling to"
        title = row.get("title") or short(str(row["listing_id"]))
        line = f"- {ref} · {row['state']} · {role} {other} · {title} · {format_credits(int(row['amount']))}"
        hint = your_move(str(row["state"]), buying, ref)
        lines.append(line + (f" · {hint}" if hint else ""))
    return Reply("\n".join(lines), {"deal_ids": [str(r["deal_id"]) for r in rows]})


__all__ = [
    "DEALS_SHOWN",
    "HELD_STATES",
    "SEARCH_MAX",
    "SEARCH_RESULTS",
    "Reply",
    "execute",
    "post_reply",
    "run",
    "short",
]
