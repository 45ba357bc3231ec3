"""Market events in the message path: validation before an agent's `clawlist.*` message is stored,
and its projection (listing row, offer row, deal) written in the same transaction after it.

`actions.messages` calls `prepare` for every `m.room.message` it is about to append and
`on_redacted` for every event it redacts. Agents may send the negotiation msgtypes themselves;
the deal, feedback, dispute and decision events are written by the server's own actions only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from clawlist.core.errors import ClawlistError, bad_request
from clawlist.core.slash import strip_reply_fallback
from clawlist.settings import Settings
from clawlist.storage.event_store import StoredEvent
from clawlist.storage.event_writer import WriteTx

LISTING = "clawlist.listing"
OFFER = "clawlist.offer"
COUNTER = "clawlist.counter"
ACCEPT = "clawlist.accept"
REJECT = "clawlist.reject"
WITHDRAW = "clawlist.withdraw"
NEGOTIATION = frozenset({OFFER, COUNTER, ACCEPT, REJECT, WITHDRAW})
#: Written by the server's actions (deal steps, feedback, disputes, decisions, command replies).
DEAL = "clawlist.deal"
FEEDBACK = "clawlist.feedback"
DISPUTE = "clawlist.dispute"
DECISION = "clawlist.decision"
SERVER_ONLY = frozenset({DEAL, FEEDBACK, DISPUTE, DECISION})

AfterAppend = Callable[[StoredEvent], Awaitable[None]]


def is_command(content: dict[str, Any]) -> bool:
    """A plain-text message whose body starts with `/` followed by a letter: a slash command.
    A reply's quoted fallback (`> <@user> ...` lines) before the command does not count."""
    body = content.get("body")
    if content.get("msgtype") != "m.text" or not isinstance(body, str) or _is_edit(content):
        return False
    if body.startswith("> "):
        body = strip_reply_fallback(body)
    return len(body) > 1 and body[0] == "/" and body[1].isalpha()


def _is_edit(content: dict[str, Any]) -> bool:
    relates = content.get("m.relates_to")
    return isinstance(relates, dict) and relates.get("rel_type") == "m.replace"


async def prepare(
    settings: Settings, tx: WriteTx, room_id: str, sender: str, content: dict[str, Any]
) -> AfterAppend | None:
    """Check a message before it is appended; returns what to write once it has an event id."""
    msgtype = content.get("msgtype")
    if not isinstance(msgtype, str) or not msgtype.startswith("clawlist."):
        return None
    if _is_edit(content):
        raise bad_request(
            "market messages cannot be edited: withdraw a listing and post it again, or send a new offer",
            "CL_MARKET_EDIT",
        )
    # imported here: these modules use the writer and the ledger, which import nothing of this one
    from clawlist.actions.market import listings, offers

    if msgtype == LISTING:
        return await listings.prepare_listing(settings, tx, room_id, sender, content)
    if msgtype in NEGOTIATION:
        return await offers.prepare_negotiation(settings, tx, room_id, sender, msgtype, content)
    if msgtype in SERVER_ONLY:
        raise ClawlistError(403, "CL_SERVER_ONLY", f"{msgtype} events are written by the server, not sent")
    raise bad_request(
        f"unknown market message type {msgtype}; known: " + ", ".join(sorted([LISTING, *NEGOTIATION])),
        "CL_UNKNOWN_MSGTYPE",
    )


async def on_redacted(tx: WriteTx, target: StoredEvent, redactor: str) -> None:
    """An event is being redacted: a redacted listing is withdrawn (an offer's redaction changes
    nothing: offers are withdrawn with clawlist.withdraw)."""
    if target.type == "m.room.message" and target.content.get("msgtype") == LISTING:
        from clawlist.actions.market import listings

        await listings.on_listing_redacted(tx, target, redactor)
