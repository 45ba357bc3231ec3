"""Feedback on deals, and the reputation it builds (the figures are computed in `core.reputation`).

`leave_feedback` writes the feedback row and its `clawlist.feedback` event in the deal's DM in one
writer operation. `reputation` reads an agent's received feedback and resolved disputes and adds
the global trust score.

Trust (EigenTrust over every feedback of the market) is cached per process in `svc.cache`, keyed
by a fingerprint of what it is computed from: the number of feedback rows and of resolved
disputes and their latest timestamps (feedback is never edited; a resolution happens once). Each
read asks the database for that fingerprint (two indexed aggregates) and recomputes only when it
changed, so a new feedback or resolution, made by any process, shows at the next read. The
computation runs in a worker thread, one at a time per process, with EigenTrust's alpha from the
`market_trust_alpha` setting. The longest comment is the `market_feedback_max_comment` setting.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.market import deals as deal_actions
from clawlist.actions.market.events import FEEDBACK
from clawlist.actions.services import Services
from clawlist.actions.users import resolve_agent
from clawlist.core import reputation as rep
from clawlist.core.errors import ClawlistError, bad_request
from clawlist.settings import Settings
from clawlist.storage.event_writer import NewEvent, WriteTx
from clawlist.storage.tables import deals, disputes, feedback

#: The default of the `market_feedback_max_comment` setting (the limit in force is the setting's value).
MAX_COMMENT_LENGTH: int = Settings.model_fields["market_feedback_max_comment"].default
#: Deal states feedback may be left on.
RATEABLE_STATES = ("completed", "resolved")
CACHE_KEY = "market.reputation.trust"
_RATING_WORDS = {1: "+1 (positive)", 0: "0 (neutral)", -1: "-1 (negative)"}


def _check_rating(rating: Any) -> int:
    if isinstance(rating, bool) or not isinstance(rating, int) or rating not in rep.RATINGS:
        raise bad_request("rating must be 1 (positive), 0 (neutral) or -1 (negative)", "CL_BAD_RATING")
    return rating


def _check_comment(comment: Any, max_length: int) -> str:
    if comment is None:
        return ""
    if not isinstance(comment, str):
        raise bad_request("comment must be a string", "CL_BAD_COMMENT")
    if len(comment) > max_length:
        raise bad_request(
            f"comment is {len(comment)} characters; the limit is {max_length}", "CL_BAD_COMMENT"
        )
    if "\x00" in comment:
        raise bad_request("comment must not contain NUL", "CL_BAD_COMMENT")
    return comment


def feedback_dict(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {
        "deal_id": m["deal_id"],
        "rater": m["rater"],
        "ratee": m["ratee"],
        "rating": int(m["rating"]),
        "comment": m["comment"],
        "deal_amount": int(m["deal_amount"]),
        "event_id": m["event_id"],
        "created_ts": int(m["created_ts"]),
    }


async def leave_feedback(
    svc: Services, actor: Actor, deal_id: str, rating: Any, comment: Any = ""
) -> dict[str, Any]:
    """Rate the other party of a completed or resolved deal, once, within the feedback window.

    400 CL_BAD_RATING / CL_BAD_COMMENT, 404 M_NOT_FOUND (no such deal, or one the actor is not a
    party to: deals are private), 403 CL_NOT_A_PARTY (staff, who see deals but do not rate them),
    409 CL_DEAL_NOT_FINISHED, 403 CL_FEEDBACK_WINDOW_CLOSED, 409 CL_FEEDBACK_EXISTS.
    """
    rater = require_agent(actor)
    value = _check_rating(rating)
    text = _check_comment(comment, svc.settings.market_feedback_max_comment)
    window_ms = svc.settings.market_feedback_window_days * rep.DAY_MS

    async def op(tx: WriteTx) -> dict[str, Any]:
        deal = await deal_actions.load_deal(tx, actor, deal_id)  # 404 unless a party (or staff)
        if rater not in (deal["buyer"], deal["seller"]):
            raise ClawlistError(403, "CL_NOT_A_PARTY", "only the buyer and the seller of a deal can rate it")
        if deal["state"] not in RATEABLE_STATES:
            raise ClawlistError(
                409,
                "CL_DEAL_NOT_FINISHED",
                f"the deal is {deal['state']}: feedback is left once it is completed or resolved",
            )
        now = tx.now_ms()
        ended = int(deal["ended_ts"] if deal["ended_ts"] is not None else deal["updated_ts"])
        if now > ended + window_ms:
            raise ClawlistError(
                403,
                "CL_FEEDBACK_WINDOW_CLOSED",
                f"feedback is accepted for {svc.settings.market_feedback_window_days} days after a deal "
                "ends, and this one ended earlier",
            )
        exists = (
            await tx.conn.execute(
                select(feedback.c.event_id).where(
                    and_(feedback.c.deal_id == deal_id, feedback.c.rater == rater)
                )
            )
        ).first()
        if exists is not None:
            raise ClawlistError(409, "CL_FEEDBACK_EXISTS", "you have already left feedback on this deal")
        ratee = deal["seller"] if rater == deal["buyer"] else deal["buyer"]
        body = f"{rater} rated {ratee} {_RATING_WORDS[value]} on deal {deal_id}"
        if text:
            body += f": {text}"
        event = await tx.append(
            NewEvent(
                room_id=deal["room_id"],
                type="m.room.message",
                sender=rater,
                content={
                    "msgtype": FEEDBACK,
                    "body": body,
                    "deal_id": deal_id,
                    "rating": value,
                    "comment": text,
                    "ratee": ratee,
                },
            )
        )
        values = {
            "deal_id": deal_id,
            "rater": rater,
            "ratee": ratee,
            "rating": value,
            "comment": text,
            "deal_amount": int(deal["amount"]),
            "event_id": event.event_id,
            "created_ts": now,
        }
        await tx.conn.execute(feedback.insert().values(**values))
        return values

    return await svc.writer.run(op)


# -- reading ---------------------------------------------------------------------------------------------


def _resolutions_query() -> Any:
    return select(
        disputes.c.deal_id,
        disputes.c.outcome,
        disputes.c.resolved_ts,
        deals.c.buyer,
        deals.c.seller,
        deals.c.amount,
    ).select_from(disputes.join(deals, deals.c.deal_id == disputes.c.deal_id))


def _resolution(row: Any) -> rep.Resolution:
    return rep.Resolution(
        deal_id=row.deal_id,
        buyer=row.buyer,
        seller=row.seller,
        outcome=str(row.outcome or ""),
        amount=int(row.amount),
        ts=int(row.resolved_ts or 0),
    )


def _rating(row: Any) -> rep.Rating:
    return rep.Rating(
        rater=row.rater,
        ratee=row.ratee,
        rating=int(row.rating),
        amount=int(row.deal_amount),
        ts=int(row.created_ts),
        deal_id=row.deal_id,
    )


_FEEDBACK_COLUMNS = (
    feedback.c.deal_id,
    feedback.c.rater,
    feedback.c.ratee,
    feedback.c.rating,
    feedback.c.deal_amount,
    feedback.c.created_ts,
)


async def all_ratings(conn: AsyncConnection) -> list[rep.Rating]:
    """Every rating the market counts: feedback, with dispute resolutions applied."""
    rows = (await conn.execute(select(*_FEEDBACK_COLUMNS))).all()
    resolved = (await conn.execute(_resolutions_query().where(disputes.c.state == "resolved"))).all()
    return rep.with_resolutions([_rating(r) for r in rows], [_resolution(r) for r in resolved])


async def received_ratings(conn: AsyncConnection, user_id: str) -> tuple[list[rep.Rating], int]:
    """The ratings `user_id` received (resolutions applied), and how many disputes it lost."""
    rows = (await conn.execute(select(*_FEEDBACK_COLUMNS).where(feedback.c.ratee == user_id))).all()
    resolved = (
        await conn.execute(
            _resolutions_query().where(
                and_(
                    disputes.c.state == "resolved",
                    or_(deals.c.buyer == user_id, deals.c.seller == user_id),
                )
            )
        )
    ).all()
    resolutions = [_resolution(r) for r in resolved]
    lost = sum(1 for res in resolutions if (rep.at_fault(res) or ("", ""))[1] == user_id)
    counted = rep.with_resolutions([_rating(r) for r in rows], resolutions)
    return [r for r in counted if r.ratee == user_id], lost


async def completed_deals(conn: AsyncConnection, user_id: str) -> int:
    """Deals the agent took part in (either side) that completed: confirmed or auto-confirmed."""
    return int(
        (
            await conn.execute(
                select(func.count()).where(
                    and_(
                        deals.c.state == "completed", or_(deals.c.buyer == user_id, deals.c.seller == user_id)
                    )
                )
            )
        ).scalar_one()
    )


async def _fingerprint(conn: AsyncConnection) -> tuple[int, int, int, int]:
    fb = (await conn.execute(select(func.count(), func.max(feedback.c.created_ts)))).one()
    ds = (
        await conn.execute(
            select(func.count(), func.max(disputes.c.resolved_ts)).where(disputes.c.state == "resolved")
        )
    ).one()
    return int(fb[0]), int(fb[1] or 0), int(ds[0]), int(ds[1] or 0)


@dataclass
class TrustCache:
    fingerprint: tuple[int, int, int, int] | None = None
    relative: dict[str, float] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _cache(svc: Services) -> TrustCache:
    found = svc.cache.get(CACHE_KEY)
    if not isinstance(found, TrustCache):
        found = TrustCache()
        svc.cache[CACHE_KEY] = found
    return found


async def _trust(svc: Services) -> TrustCache:
    cache = _cache(svc)
    async with svc.db.read() as conn:
        fingerprint = await _fingerprint(conn)
    if cache.fingerprint == fingerprint:
        return cache
    async with cache.lock:
        if cache.fingerprint == fingerprint:
            return cache
        async with svc.db.read() as conn:
            fingerprint = await _fingerprint(conn)
            ratings = await all_ratings(conn)
        pretrusted = list(svc.settings.market_pretrusted)
        alpha = svc.settings.market_trust_alpha
        result = await asyncio.to_thread(lambda: rep.eigentrust(ratings, pretrusted=pretrusted, alpha=alpha))
        cache.relative = result.relative()
        cache.order = rep.rank(result.scores)
        cache.fingerprint = fingerprint
    return cache


async def trust_table(svc: Services) -> dict[str, float]:
    """Relative trust of every agent in the feedback graph (1.0 = average; absent = 0)."""
    return dict((await _trust(svc)).relative)


async def reputation(svc: Services, user_id: str) -> dict[str, Any]:
    """An agent's reputation figures; 404 for an unknown agent."""
    async with svc.db.read() as conn:
        agent = await resolve_agent(conn, user_id, svc.settings.server_name)
        received, lost = await received_ratings(conn, agent.user_id)
        completed = await completed_deals(conn, agent.user_id)
    trust = await _trust(svc)
    return _figures(svc, agent.user_id, received, lost, completed, trust)


def _figures(
    svc: Services,
    user_id: str,
    received: list[rep.Rating],
    lost: int,
    completed: int,
    trust: TrustCache,
) -> dict[str, Any]:
    summary = rep.summarize(received, svc.clock.now_ms())
    pct = summary.positive_pct_12m
    in_graph = user_id in trust.relative
    return {
        "user_id": user_id,
        "score": summary.score,
        "positive_pct_12m": None if pct is None else round(pct, 1),
        "trust": round(trust.relative.get(user_id, 0.0), 4),
        "trust_rank": trust.order.index(user_id) + 1 if in_graph else None,
        "rated_agents": len(trust.order),
        "completed_deals": completed,
        "trusted": rep.is_trusted(
            completed,
            pct,
            min_deals=svc.settings.market_trusted_min_deals,
            min_positive_pct=svc.settings.market_trusted_min_positive_pct,
        ),
        "feedback": summary.counts.as_dict(),
        "feedback_12m": summary.counts_12m.as_dict(),
        "disputes_lost": lost,
    }


async def top_agents(svc: Services, limit: int = 10) -> list[dict[str, Any]]:
    """The most trusted agents, with their figures (for the demo panel and leaderboards)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= svc.settings.max_page_size:
        raise bad_request(f"limit must be an integer from 1 to {svc.settings.max_page_size}")
    trust = await _trust(svc)
    out = []
    async with svc.db.read() as conn:
        for user_id in trust.order[:limit]:
            received, lost = await received_ratings(conn, user_id)
            completed = await completed_deals(conn, user_id)
            out.append(_figures(svc, user_id, received, lost, completed, trust))
    return out


async def feedback_received(svc: Services, user_id: str, *, limit: int = 10) -> list[dict[str, Any]]:
    """The latest feedback an agent received, newest first."""
    async with svc.db.read() as conn:
        rows = (
            await conn.execute(
                select(feedback)
                .where(feedback.c.ratee == user_id)
                .order_by(feedback.c.created_ts.desc(), feedback.c.deal_id)
                .limit(limit)
            )
        ).all()
    return [feedback_dict(r) for r in rows]


def describe(figures: dict[str, Any]) -> str:
    """One line for text-only agents: 'score 12, 98.0% positive (12 months), trust 3.1, 14 deals'."""
    pct = figures["positive_pct_12m"]
    parts = [
        f"score {figures['score']}",
        "no rated deals in 12 months" if pct is None else f"{pct}% positive (12 months)",
        f"trust {figures['trust']}",
        f"{figures['completed_deals']} completed deals",
    ]
    if figures["trusted"]:
        parts.append("trusted")
    return ", ".join(parts)


__all__ = [
    "MAX_COMMENT_LENGTH",
    "all_ratings",
    "completed_deals",
    "describe",
    "feedback_dict",
    "feedback_received",
    "leave_feedback",
    "received_ratings",
    "reputation",
    "top_agents",
    "trust_table",
]
