"""Slash-command replies: their text (outcome, next step, usage, hints) and posting them as m.notice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.core import slash
from clawlist.core.deal_states import DealState
from clawlist.core.errors import ClawlistError
from clawlist.core.money import format_credits
from clawlist.storage.event_writer import NewEvent, WriteTx


@dataclass
class Reply:
    body: str
    result: dict[str, Any] = field(default_factory=dict)


def short(ref: str) -> str:
    """The reference printed for an id: its first characters, without the event id's `$`."""
    return ref.removeprefix("$")[: slash.REF_LENGTH]


async def post_reply(svc: Services, room_id: str, event_id: str, reply: Reply, *, result: bool = True) -> str:
    """Append the m.notice reply (to `event_id`) from the system agent; returns its event id.
    `result`: carry `clawlist.result` (the answer to a command; not for a heads-up to the other party)."""
    from clawlist.actions.bootstrap import system_user_id

    content: dict[str, Any] = {
        "msgtype": "m.notice",
        "body": reply.body,
        "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
    }
    if result:
        content["clawlist.result"] = reply.result
    sender = system_user_id(svc)

    async def op(tx: WriteTx) -> str:
        stored = await tx.append(NewEvent(room_id=room_id, type=ev.MESSAGE, sender=sender, content=content))
        return stored.event_id

    return await svc.writer.run(op)


def usage_reply(exc: slash.SlashError) -> Reply:
    result = {"ok": False, "command": exc.command, "errcode": exc.errcode, "error": exc.message}
    if exc.command is None:
        return Reply(f"{exc.message}.\nCommands: {command_list()}", result)
    body = f"/{exc.command} not understood: {exc.message}.\nUsage: {exc.usage}"
    if exc.command in slash.DETAILS:
        body += f"\nExample: {slash.DETAILS[exc.command][1]}"
    return Reply(body, {**result, "usage": exc.usage})


def command_list() -> str:
    return " ".join(f"/{name}" for name in slash.USAGE)


HINTS = {
    "M_NOT_FOUND": "Check the reference: /search lists listings, /deals your deals.",
    "CL_INSUFFICIENT_FUNDS": "Check your balance with /balance.",
    "CL_ILLEGAL_TRANSITION": "See where your deals stand with /deals.",
    "CL_NOT_YOUR_MOVE": "See where your deals stand with /deals.",
    "CL_AMBIGUOUS_REF": "Give more characters of the reference, or the full id.",
    "M_LIMIT_EXCEEDED": "Wait a moment and send the command again.",
}


def error_reply(name: str, exc: ClawlistError) -> Reply:
    message = exc.message.rstrip(".")
    body = f"/{name} refused: {message}."
    hint = exc.extra.get("hint") if isinstance(exc.extra.get("hint"), str) else HINTS.get(exc.errcode)
    if hint:
        body += f"\n{hint}"
    if exc.status == 400 and name in slash.USAGE:
        body += f"\nUsage: {slash.USAGE[name]}"
    return Reply(body, {"ok": False, "command": name, "errcode": exc.errcode, "error": exc.message})


def listing_line(index: int, item: dict[str, Any]) -> str:
    price = format_credits(int(item["price"]))
    parts = [f"{index}. {short(str(item['listing_id']))} · {item.get('title', '')} — {price}"]
    available = item.get("available", item.get("quantity"))
    if isinstance(available, int) and available > 1:
        parts.append(f"{available} available")
    if item.get("condition"):
        parts.append(str(item["condition"]))
    if item.get("location"):
        parts.append(str(item["location"]))
    if item.get("category"):
        parts.append(f"#{item['category']}")
    seller = item.get("seller")
    if seller:
        score = item.get("seller_score", item.get("reputation"))
        if isinstance(score, dict):
            score = score.get("score")
        parts.append(f"seller {seller}" + (f" (score {score:+d})" if isinstance(score, int) else ""))
    return " · ".join(parts)


def plain_amount(minor: object) -> str:
    """1250 -> '12.50', 1200 -> '12': an amount as an agent would type it."""
    value = int(minor) if isinstance(minor, int) else 0
    whole, cents = divmod(value, 100)
    return f"{whole}" if cents == 0 else f"{whole}.{cents:02d}"


def offer_reply(here: str, offer: dict[str, Any], kind: str, amount: int, quantity: int) -> Reply:
    offer_id = str(offer["offer_id"])
    room = str(offer.get("room_id") or "")
    to_agent = str(offer.get("to_agent") or offer.get("seller") or "the other party")
    ref = short(offer_id)
    units = f" for {quantity} units" if quantity > 1 else ""
    if room and room != here:
        where = f"posted in your DM with {to_agent} (room {room})"
    else:
        where = f"posted here for {to_agent}"
    body = (
        f"{kind} {ref} of {format_credits(amount)}{units} {where}. Offer id: {offer_id}.\n"
        f"{to_agent} answers with /accept {ref}, /counter {ref} <amount> or /reject {ref}."
    )
    return Reply(body, {"offer_id": offer_id, "room_id": room, "ref": ref})


NEXT = {
    DealState.AGREED: "Next: the buyer pays into escrow with /fund {ref}.",
    DealState.FUNDED: "Next: the seller delivers, then sends /delivered {ref}.",
    DealState.DELIVERED: "Next: the buyer checks it and sends /confirm {ref} (or /dispute {ref} <reason>).",
    DealState.COMPLETED: "Both parties can now rate each other: /feedback {ref} <+1|0|-1> <comment>.",
    DealState.DISPUTED: "A moderator will decide from the DM transcript.",
    DealState.RESOLVED: "Both parties can now rate each other: /feedback {ref} <+1|0|-1> <comment>.",
    DealState.CANCELLED: "",
}

DONE = {
    "accept": "Offer accepted: deal {ref} agreed",
    "fund": "Deal {ref} funded: {amount} held in escrow",
    "delivered": "Deal {ref} marked delivered",
    "confirm": "Deal {ref} completed",
    "cancel": "Deal {ref} cancelled",
    "dispute": "Dispute opened on deal {ref}",
}


def deal_reply(deal: dict[str, Any], step: str, note: str | None = None) -> Reply:
    deal_id = str(deal["deal_id"])
    ref = short(deal_id)
    state = str(deal["state"])
    amount = int(deal["amount"])
    text = DONE[step].format(ref=ref, amount=format_credits(amount))
    if step == "accept":
        text += f": {deal['buyer']} buys from {deal['seller']} for {format_credits(amount)}"
    if step == "confirm":
        fee = int(deal.get("fee") or 0)
        text += f": {deal['seller']} received {format_credits(amount - fee)} (fee {format_credits(fee)})"
    if step == "cancel" and state == DealState.FUNDED.value:
        text = f"Cancellation of deal {ref} requested: the other party must /cancel {ref} too to refund"
    text += "."
    if note:
        text += f" Note: {note}" + ("" if note.endswith((".", "!", "?")) else ".")
    next_step = NEXT.get(DealState(state), "").format(ref=ref)
    body = f"{text} Deal id: {deal_id}." + (f"\n{next_step}" if next_step else "")
    return Reply(body, {"deal_id": deal_id, "state": state, "room_id": deal.get("room_id"), "ref": ref})


def your_move(state: str, buying: bool, ref: str) -> str:
    if state == DealState.AGREED.value:
        return f"you: /fund {ref}" if buying else "waiting for the buyer to fund"
    if state == DealState.FUNDED.value:
        return "waiting for delivery" if buying else f"you: deliver, then /delivered {ref}"
    if state == DealState.DELIVERED.value:
        return f"you: /confirm {ref}" if buying else "waiting for the buyer to confirm"
    if state == DealState.DISPUTED.value:
        return "a moderator decides"
    return ""


__all__ = [
    "DONE",
    "HINTS",
    "NEXT",
    "Reply",
    "command_list",
    "deal_reply",
    "error_reply",
    "listing_line",
    "offer_reply",
    "plain_amount",
    "post_reply",
    "short",
    "usage_reply",
    "your_move",
]
