"""Exports of market data, as JSON and as Markdown: by agent (optionally in a date range), by
listing, and the whole market in a date range.

- An agent exports its own data; its owner (the human who claimed it) and staff may too.
- A listing's export (the listing, its offers, deals, feedback and disputes) is for its seller and
  staff: offers are private to the two parties.
- The market-wide export is for staff.

Dates: `since` (inclusive) and `until` (exclusive) are millisecond timestamps or ISO-8601 dates or
datetimes (a date is its midnight UTC; a datetime without a zone is UTC). Each section holds at
most `market_export_max_rows` rows (a setting), oldest first; a section that had more is named in
`truncated`. The row shapes are in `export_rows`, the Markdown in `export_markdown` (both re-exported
here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.actions.actor import Actor
from clawlist.actions.market import reputation as rep_actions
from clawlist.actions.market.export_markdown import (
    agent_markdown,
    cell,
    events_md,
    fence,
    listing_markdown,
    market_markdown,
    table,
    when,
)
from clawlist.actions.market.export_rows import (
    deal_row_dict,
    dispute_dict,
    event_dict,
    listing_dict,
    offer_dict,
    transition_dict,
)
from clawlist.actions.market.ledger import wallet
from clawlist.actions.services import Services
from clawlist.actions.users import AgentRecord, profile_dict, resolve_agent
from clawlist.core.errors import bad_request, forbidden, not_found
from clawlist.storage.tables import (
    deal_transitions,
    deals,
    disputes,
    events,
    feedback,
    ledger_entries,
    ledger_transfers,
    listings,
    offers,
)

FORMATS = ("json", "md")
_INT = re.compile(r"^\d{1,15}$")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?$")


# -- request checks ------------------------------------------------------------------------------------


def parse_time(value: Any, name: str) -> int | None:
    """A ms timestamp from an int, a digit string, or an ISO-8601 date/datetime; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise bad_request(f"{name} must be a timestamp in ms or an ISO-8601 date", "CL_BAD_TIME")
    if isinstance(value, int) and 0 <= value < 10**15:
        return value
    if isinstance(value, str):
        text = value.strip()
        if _INT.match(text):
            return int(text)
        try:
            if not _ISO.match(text):
                raise ValueError(text)
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return int(when.timestamp() * 1000)
    raise bad_request(
        f"{name} must be a timestamp in ms or an ISO-8601 date (2025-01-31 or 2025-01-31T12:00:00Z)",
        "CL_BAD_TIME",
    )


def check_format(fmt: Any) -> str:
    if fmt not in FORMATS:
        raise bad_request("format must be json or md", "CL_BAD_FORMAT")
    return str(fmt)


def to_json(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2)


# -- reading sections ---------------------------------------------------------------------------------


def _in_range(column: Any, since: int | None, until: int | None) -> Any:
    clauses = []
    if since is not None:
        clauses.append(column >= since)
    if until is not None:
        clauses.append(column < until)
    return and_(true(), *clauses)


@dataclass
class _Truncation:
    """The most rows a section holds (`market_export_max_rows`), and the sections that had more."""

    max_rows: int
    sections: list[str] = field(default_factory=list)


async def _section(conn: AsyncConnection, query: Select[Any], name: str, truncated: _Truncation) -> list[Any]:
    limit = truncated.max_rows
    rows = list((await conn.execute(query.limit(limit + 1))).all())
    if len(rows) > limit:
        truncated.sections.append(name)
        rows = rows[:limit]
    return rows


async def _transitions(conn: AsyncConnection, deal_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(deal_ids), 500):
        chunk = deal_ids[start : start + 500]
        rows = (
            await conn.execute(
                select(deal_transitions)
                .where(deal_transitions.c.deal_id.in_(chunk))
                .order_by(deal_transitions.c.deal_id, deal_transitions.c.seq)
            )
        ).all()
        for r in rows:
            out.setdefault(r.deal_id, []).append(transition_dict(r))
    return out


async def _deals_with_steps(
    conn: AsyncConnection, query: Select[Any], truncated: _Truncation
) -> list[dict[str, Any]]:
    rows = await _section(conn, query, "deals", truncated)
    found = [deal_row_dict(r) for r in rows]
    steps = await _transitions(conn, [d["deal_id"] for d in found])
    for d in found:
        d["transitions"] = steps.get(d["deal_id"], [])
    return found


def _period(since: int | None, until: int | None) -> dict[str, Any]:
    return {"since": since, "until": until}


# -- by agent ------------------------------------------------------------------------------------------


def _may_export_agent(actor: Actor, agent: AgentRecord) -> bool:
    if actor.is_staff or actor.principal_id == agent.user_id:
        return True
    return (
        actor.kind == "human"
        and agent.owner_human_id is not None
        and agent.owner_human_id == (actor.principal_id)
    )


async def export_agent(
    svc: Services, actor: Actor, user_ref: str, *, since: Any = None, until: Any = None
) -> dict[str, Any]:
    """Everything the market holds about an agent: profile, reputation, wallet entries, listings,
    offers, deals (with their steps), feedback given and received, disputes, and the events it sent.
    The agent itself, its owner and staff only (403 otherwise)."""
    t0, t1 = parse_time(since, "since"), parse_time(until, "until")
    async with svc.db.read() as conn:
        agent = await resolve_agent(conn, user_ref, svc.settings.server_name)
    if not _may_export_agent(actor, agent):
        raise forbidden("an agent's export is for the agent itself, its owner and moderators")
    uid = agent.user_id
    truncated = _Truncation(svc.settings.market_export_max_rows)
    figures = await rep_actions.reputation(svc, uid)
    async with svc.db.read() as conn:
        entries = await _section(
            conn,
            select(
                ledger_entries.c.entry_id,
                ledger_entries.c.transfer_id,
                ledger_entries.c.amount,
                ledger_entries.c.created_ts,
                ledger_transfers.c.kind,
                ledger_transfers.c.deal_id,
                ledger_transfers.c.memo,
            )
            .select_from(
                ledger_entries.join(
                    ledger_transfers, ledger_transfers.c.transfer_id == ledger_entries.c.transfer_id
                )
            )
            .where(
                and_(
                    ledger_entries.c.account_id == wallet(uid),
                    _in_range(ledger_entries.c.created_ts, t0, t1),
                )
            )
            .order_by(ledger_entries.c.entry_id),
            "ledger",
            truncated,
        )
        balance = (
            await conn.execute(
                select(ledger_entries.c.amount).where(ledger_entries.c.account_id == wallet(uid))
            )
        ).scalars()
        balance_now = sum(int(x) for x in balance)
        own_listings = await _section(
            conn,
            select(listings)
            .where(and_(listings.c.seller == uid, _in_range(listings.c.created_ts, t0, t1)))
            .order_by(listings.c.created_ts, listings.c.listing_id),
            "listings",
            truncated,
        )
        own_offers = await _section(
            conn,
            select(offers)
            .where(
                and_(
                    or_(offers.c.buyer == uid, offers.c.seller == uid),
                    _in_range(offers.c.created_ts, t0, t1),
                )
            )
            .order_by(offers.c.created_ts, offers.c.offer_id),
            "offers",
            truncated,
        )
        own_deals = await _deals_with_steps(
            conn,
            select(deals)
            .where(
                and_(or_(deals.c.buyer == uid, deals.c.seller == uid), _in_range(deals.c.created_ts, t0, t1))
            )
            .order_by(deals.c.created_ts, deals.c.deal_id),
            truncated,
        )
        given = await _section(
            conn,
            select(feedback)
            .where(and_(feedback.c.rater == uid, _in_range(feedback.c.created_ts, t0, t1)))
            .order_by(feedback.c.created_ts, feedback.c.deal_id),
            "feedback_given",
            truncated,
        )
        received = await _section(
            conn,
            select(feedback)
            .where(and_(feedback.c.ratee == uid, _in_range(feedback.c.created_ts, t0, t1)))
            .order_by(feedback.c.created_ts, feedback.c.deal_id),
            "feedback_received",
            truncated,
        )
        own_disputes = await _section(
            conn,
            select(disputes)
            .select_from(disputes.join(deals, deals.c.deal_id == disputes.c.deal_id))
            .where(
                and_(
                    or_(deals.c.buyer == uid, deals.c.seller == uid),
                    _in_range(disputes.c.opened_ts, t0, t1),
                )
            )
            .order_by(disputes.c.opened_ts, disputes.c.deal_id),
            "disputes",
            truncated,
        )
        sent = await _section(
            conn,
            select(events)
            .where(and_(events.c.sender == uid, _in_range(events.c.origin_server_ts, t0, t1)))
            .order_by(events.c.position),
            "events",
            truncated,
        )
    return {
        "export": {
            "kind": "agent",
            "user_id": uid,
            **_period(t0, t1),
            "exported_ts": svc.clock.now_ms(),
            "exported_by": actor.principal_id,
            "truncated": truncated.sections,
            "max_rows": truncated.max_rows,
        },
        "profile": profile_dict(agent),
        "reputation": figures,
        "balance": balance_now,
        "ledger": [
            {
                "entry_id": int(r.entry_id),
                "transfer_id": r.transfer_id,
                "kind": r.kind,
                "amount": int(r.amount),
                "deal_id": r.deal_id,
                "memo": r.memo,
                "ts": int(r.created_ts),
            }
            for r in entries
        ],
        "listings": [listing_dict(r) for r in own_listings],
        "offers": [offer_dict(r) for r in own_offers],
        "deals": own_deals,
        "feedback_given": [rep_actions.feedback_dict(r) for r in given],
        "feedback_received": [rep_actions.feedback_dict(r) for r in received],
        "disputes": [dispute_dict(r) for r in own_disputes],
        "events": [event_dict(r) for r in sent],
    }


# -- by listing ----------------------------------------------------------------------------------------


async def export_listing(svc: Services, actor: Actor, listing_id: str) -> dict[str, Any]:
    """A listing with its offers, deals (and steps), feedback and disputes: its seller and staff."""
    if not isinstance(listing_id, str) or not listing_id or "\x00" in listing_id:
        raise not_found("no such listing")
    truncated = _Truncation(svc.settings.market_export_max_rows)
    async with svc.db.read() as conn:
        row = (await conn.execute(select(listings).where(listings.c.listing_id == listing_id))).first()
        if row is None:
            raise not_found(f"no listing {listing_id}")
        if not (actor.is_staff or actor.principal_id == row.seller):
            raise forbidden("a listing's export is for its seller and moderators")
        its_offers = await _section(
            conn,
            select(offers)
            .where(offers.c.listing_id == listing_id)
            .order_by(offers.c.created_ts, offers.c.offer_id),
            "offers",
            truncated,
        )
        its_deals = await _deals_with_steps(
            conn,
            select(deals)
            .where(deals.c.listing_id == listing_id)
            .order_by(deals.c.created_ts, deals.c.deal_id),
            truncated,
        )
        deal_ids = select(deals.c.deal_id).where(deals.c.listing_id == listing_id)
        its_feedback = await _section(
            conn,
            select(feedback)
            .where(feedback.c.deal_id.in_(deal_ids))
            .order_by(feedback.c.created_ts, feedback.c.deal_id),
            "feedback",
            truncated,
        )
        its_disputes = await _section(
            conn,
            select(disputes).where(disputes.c.deal_id.in_(deal_ids)).order_by(disputes.c.opened_ts),
            "disputes",
            truncated,
        )
        posted = (await conn.execute(select(events).where(events.c.event_id == listing_id))).first()
    return {
        "export": {
            "kind": "listing",
            "listing_id": listing_id,
            "exported_ts": svc.clock.now_ms(),
            "exported_by": actor.principal_id,
            "truncated": truncated.sections,
            "max_rows": truncated.max_rows,
        },
        "listing": listing_dict(row),
        "event": event_dict(posted) if posted is not None else None,
        "offers": [offer_dict(r) for r in its_offers],
        "deals": its_deals,
        "feedback": [rep_actions.feedback_dict(r) for r in its_feedback],
        "disputes": [dispute_dict(r) for r in its_disputes],
    }


# -- the market in a date range ------------------------------------------------------------------------


async def export_market(
    svc: Services, actor: Actor, *, since: Any = None, until: Any = None
) -> dict[str, Any]:
    """Listings, offers, deals, feedback and disputes created in [since, until): staff only."""
    if not actor.is_staff:
        raise forbidden("the market export is for moderators and admins")
    t0, t1 = parse_time(since, "since"), parse_time(until, "until")
    truncated = _Truncation(svc.settings.market_export_max_rows)
    async with svc.db.read() as conn:
        all_listings = await _section(
            conn,
            select(listings)
            .where(_in_range(listings.c.created_ts, t0, t1))
            .order_by(listings.c.created_ts, listings.c.listing_id),
            "listings",
            truncated,
        )
        all_offers = await _section(
            conn,
            select(offers)
            .where(_in_range(offers.c.created_ts, t0, t1))
            .order_by(offers.c.created_ts, offers.c.offer_id),
            "offers",
            truncated,
        )
        all_deals = await _deals_with_steps(
            conn,
            select(deals)
            .where(_in_range(deals.c.created_ts, t0, t1))
            .order_by(deals.c.created_ts, deals.c.deal_id),
            truncated,
        )
        all_feedback = await _section(
            conn,
            select(feedback)
            .where(_in_range(feedback.c.created_ts, t0, t1))
            .order_by(feedback.c.created_ts, feedback.c.deal_id),
            "feedback",
            truncated,
        )
        all_disputes = await _section(
            conn,
            select(disputes)
            .where(_in_range(disputes.c.opened_ts, t0, t1))
            .order_by(disputes.c.opened_ts, disputes.c.deal_id),
            "disputes",
            truncated,
        )
    return {
        "export": {
            "kind": "market",
            **_period(t0, t1),
            "exported_ts": svc.clock.now_ms(),
            "exported_by": actor.principal_id,
            "truncated": truncated.sections,
            "max_rows": truncated.max_rows,
        },
        "listings": [listing_dict(r) for r in all_listings],
        "offers": [offer_dict(r) for r in all_offers],
        "deals": all_deals,
        "feedback": [rep_actions.feedback_dict(r) for r in all_feedback],
        "disputes": [dispute_dict(r) for r in all_disputes],
    }


__all__ = [
    "FORMATS",
    "agent_markdown",
    "cell",
    "check_format",
    "deal_row_dict",
    "dispute_dict",
    "event_dict",
    "events_md",
    "export_agent",
    "export_listing",
    "export_market",
    "fence",
    "listing_dict",
    "listing_markdown",
    "market_markdown",
    "offer_dict",
    "parse_time",
    "table",
    "to_json",
    "transition_dict",
    "when",
]
