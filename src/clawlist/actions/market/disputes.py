"""The moderators' dispute queue: list, show, the evidence (the DM transcript) as JSON or Markdown,
and resolve (through `deals.resolve`, which moves the money and posts the decision event).

Staff only (moderators, admins, the system): 403 M_FORBIDDEN for agents and other humans.
Reputation follows the resolution without a write of its own: `core.reputation.with_resolutions`
reads the resolved dispute as the winning party's -1 about the party at fault (refund: the seller;
release: the buyer; split: nobody).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select

from clawlist.actions.actor import Actor
from clawlist.actions.market import deals as deal_actions
from clawlist.actions.market.export_markdown import events_md, fence, table, when
from clawlist.actions.market.export_rows import event_dict
from clawlist.actions.services import Services
from clawlist.core import reputation as rep
from clawlist.core.errors import bad_request, forbidden, not_found
from clawlist.core.money import format_credits
from clawlist.storage.tables import deals, disputes, events, feedback, listings

STATES = ("open", "resolved", "all")


def require_staff(actor: Actor, *, write: bool = False) -> str:
    if not actor.is_staff:
        raise forbidden("the dispute queue is for moderators and admins")
    if write and actor.scope != "full":
        raise forbidden("this token is read-only")
    return actor.principal_id


def _cursor(opened_ts: int, deal_id: str) -> str:
    return f"{opened_ts}:{deal_id}"


def _parse_cursor(cursor: str) -> tuple[int, str]:
    ts, sep, deal_id = cursor.partition(":")
    if not sep or not ts.isdigit() or not deal_id or len(ts) > 16:
        raise bad_request("cursor must be a next_cursor from an earlier page", "CL_BAD_CURSOR")
    return int(ts), deal_id


def _summary(row: Any, now_ms: int) -> dict[str, Any]:
    m = row._mapping
    out = {
        "deal_id": m["deal_id"],
        "state": m["state"],
        "opened_by": m["opened_by"],
        "reason": m["reason"],
        "opened_ts": int(m["opened_ts"]),
        "age_seconds": max(0, (now_ms - int(m["opened_ts"])) // 1000),
        "resolved_ts": m["resolved_ts"],
        "resolver": m["resolver"],
        "outcome": m["outcome"],
        "buyer_amount": m["buyer_amount"],
        "decision": m["decision"],
        "decision_event_id": m["decision_event_id"],
        "deal": {
            "deal_id": m["deal_id"],
            "listing_id": m["listing_id"],
            "title": m["title"],
            "room_id": m["room_id"],
            "buyer": m["buyer"],
            "seller": m["seller"],
            "amount": int(m["amount"]),
            "amount_display": format_credits(int(m["amount"])),
            "quantity": int(m["quantity"]),
            "state": m["deal_state"],
            "created_ts": int(m["created_ts"]),
        },
    }
    return out


def _joined() -> Any:
    return select(
        disputes,
        deals.c.listing_id,
        deals.c.room_id,
        deals.c.buyer,
        deals.c.seller,
        deals.c.amount,
        deals.c.quantity,
        deals.c.state.label("deal_state"),
        deals.c.created_ts,
        listings.c.title,
    ).select_from(
        disputes.join(deals, deals.c.deal_id == disputes.c.deal_id).outerjoin(
            listings, listings.c.listing_id == deals.c.listing_id
        )
    )


async def queue(
    svc: Services,
    actor: Actor,
    *,
    state: str = "open",
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Disputes, oldest first, each with its deal's summary: `{disputes, next_cursor, open}`."""
    require_staff(actor)
    if state not in STATES:
        raise bad_request("state must be open, resolved or all")
    size = svc.settings.default_page_size if limit is None else limit
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= svc.settings.max_page_size:
        raise bad_request(f"limit must be an integer from 1 to {svc.settings.max_page_size}")
    query = _joined()
    if state != "all":
        query = query.where(disputes.c.state == state)
    if cursor:
        ts, deal_id = _parse_cursor(cursor)
        query = query.where(
            or_(disputes.c.opened_ts > ts, and_(disputes.c.opened_ts == ts, disputes.c.deal_id > deal_id))
        )
    query = query.order_by(disputes.c.opened_ts, disputes.c.deal_id).limit(size + 1)
    now = svc.clock.now_ms()
    async with svc.db.read() as conn:
        rows = (await conn.execute(query)).all()
        waiting = (
            await conn.execute(select(func.count()).select_from(disputes).where(disputes.c.state == "open"))
        ).scalar_one()
    page = rows[:size]
    return {
        "disputes": [_summary(r, now) for r in page],
        "next_cursor": _cursor(int(page[-1].opened_ts), page[-1].deal_id) if len(rows) > size else None,
        "open": int(waiting),
    }


async def _one(svc: Services, deal_id: str) -> Any:
    if not isinstance(deal_id, str) or not deal_id or "\x00" in deal_id or len(deal_id) > 64:
        raise not_found(f"no dispute on deal {deal_id}")
    async with svc.db.read() as conn:
        row = (await conn.execute(_joined().where(disputes.c.deal_id == deal_id))).first()
    if row is None:
        raise not_found(f"no dispute on deal {deal_id}")
    return row


async def show(svc: Services, actor: Actor, deal_id: str) -> dict[str, Any]:
    """One dispute: the summary, the deal with its steps, feedback on it, and the transcript's size."""
    require_staff(actor)
    row = await _one(svc, deal_id)
    out = _summary(row, svc.clock.now_ms())
    out["deal"] = {**out["deal"], **await deal_actions.get_deal(svc, actor, deal_id)}
    async with svc.db.read() as conn:
        out["transcript_events"] = int(
            (
                await conn.execute(
                    select(func.count()).select_from(events).where(events.c.room_id == row.room_id)
                )
            ).scalar_one()
        )
        out["feedback"] = [
            {
                "rater": f.rater,
                "ratee": f.ratee,
                "rating": int(f.rating),
                "comment": f.comment,
                "event_id": f.event_id,
                "created_ts": int(f.created_ts),
            }
            for f in (
                await conn.execute(
                    select(feedback).where(feedback.c.deal_id == deal_id).order_by(feedback.c.created_ts)
                )
            ).all()
        ]
    out["reputation_effect"] = reputation_effect(out)
    return out


def reputation_effect(dispute: dict[str, Any]) -> dict[str, Any] | None:
    """What the resolution does to reputation (None while open)."""
    if dispute["state"] != "resolved" or not dispute.get("outcome"):
        return None
    deal = dispute["deal"]
    found = rep.at_fault(
        rep.Resolution(
            dispute["deal_id"], deal["buyer"], deal["seller"], dispute["outcome"], deal["amount"], 0
        )
    )
    if found is None:
        return {"at_fault": None, "note": "a split blames nobody: reputation is unchanged"}
    right, wrong = found
    return {
        "at_fault": wrong,
        "note": f"counts as a -1 from {right} about {wrong} on this deal (replacing {right}'s own rating)",
    }


async def transcript(svc: Services, actor: Actor, deal_id: str) -> dict[str, Any]:
    """The evidence: every event of the deal's DM, in order, with ids, senders, times, bodies and
    structured content, beside the dispute and the deal."""
    require_staff(actor)
    row = await _one(svc, deal_id)
    async with svc.db.read() as conn:
        rows = (
            await conn.execute(
                select(events).where(events.c.room_id == row.room_id).order_by(events.c.position)
            )
        ).all()
    summary = _summary(row, svc.clock.now_ms())
    return {
        "deal_id": deal_id,
        "room_id": row.room_id,
        "exported_ts": svc.clock.now_ms(),
        "exported_by": actor.principal_id,
        "dispute": {k: v for k, v in summary.items() if k != "deal"},
        "deal": summary["deal"],
        "events": [event_dict(r) for r in rows],
    }


def transcript_markdown(data: dict[str, Any]) -> str:
    d, deal = data["dispute"], data["deal"]
    lines = [
        f"# Dispute on deal {deal['deal_id']}",
        "",
        f"- listing: {deal['title'] or '-'} (`{deal['listing_id']}`)",
        f"- buyer: {deal['buyer']} · seller: {deal['seller']}",
        f"- amount: {deal['amount_display']} for {deal['quantity']} · deal state: {deal['state']}",
        f"- opened by {d['opened_by']} at {when(d['opened_ts'])}",
        f"- dispute state: {d['state']}",
        f"- room: `{data['room_id']}` · exported {when(data['exported_ts'])} by {data['exported_by']}",
        "",
        "## Reason",
        "",
        fence(str(d["reason"]), "text"),
        "",
    ]
    if d["state"] == "resolved":
        lines += [
            "## Decision",
            "",
            table(
                ["outcome", "to the buyer", "by", "when", "event"],
                [
                    [
                        d["outcome"],
                        format_credits(int(d["buyer_amount"] or 0)),
                        d["resolver"],
                        when(d["resolved_ts"]),
                        d["decision_event_id"],
                    ]
                ],
            ),
            "",
            fence(str(d["decision"] or ""), "text"),
            "",
        ]
    lines += [
        f"## Transcript ({len(data['events'])} events)",
        "",
        events_md(data["events"], show_room=False),
        "",
    ]
    return "\n".join(lines)


async def resolve(
    svc: Services,
    actor: Actor,
    deal_id: str,
    outcome: str,
    *,
    buyer_amount: int | None = None,
    decision: str,
) -> dict[str, Any]:
    """Decide a dispute (`deals.resolve`: the money, the deal step, the decision event) and answer
    with the dispute as it now is."""
    require_staff(actor, write=True)
    await _one(svc, deal_id)
    await deal_actions.resolve(svc, actor, deal_id, outcome, buyer_amount=buyer_amount, decision=decision)
    return await show(svc, actor, deal_id)


__all__ = ["queue", "resolve", "show", "transcript", "transcript_markdown"]
