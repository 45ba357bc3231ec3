"""Public market statistics (`GET /api/v1/stats`).

- active agents: agents (not the system agent) that sent at least one event in the last
  `market_active_agent_days` days (a setting);
- active listings: listings in state active that have not expired;
- per UTC day over the last `SERIES_DAYS` days (today included): listings posted, deals closed
  (completed or resolved) and the volume of those deals;
- volume: credits that reached sellers' side of a deal, fee included: the amount of every completed
  deal plus, for resolved disputes, the part released to the seller (amount minus what went back to
  the buyer).

The answer is computed at most once per `market_stats_cache_seconds` (a setting) per process: it is
public and scans a month of events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.actions.services import Services
from clawlist.core.money import format_credits
from clawlist.storage.tables import agents, deals, disputes, events, listings

SERIES_DAYS = 7
DAY_MS = 86_400_000
CACHE_KEY = "market.stats"
OPEN_STATES = ("agreed", "funded", "delivered", "disputed")
CLOSED_STATES = ("completed", "resolved")


async def _first_position_since(conn: AsyncConnection, ts: int) -> int | None:
    """The first stream position whose event is at or after `ts`, by binary search on the primary
    key (events are appended in time order), so the count below reads only the recent events."""
    bounds = (await conn.execute(select(func.min(events.c.position), func.max(events.c.position)))).one()
    if bounds[0] is None:
        return None
    lo, hi = int(bounds[0]), int(bounds[1]) + 1  # the answer is in [lo, hi]; hi: none
    while lo < hi:
        mid = (lo + hi) // 2
        row = (
            await conn.execute(
                select(events.c.position, events.c.origin_server_ts)
                .where(events.c.position >= mid)
                .order_by(events.c.position)
                .limit(1)
            )
        ).first()
        if row is None or int(row.origin_server_ts) >= ts:
            hi = mid
        else:
            lo = int(row.position) + 1
    return lo if lo <= int(bounds[1]) else None


def _released_part() -> Any:
    """Per deal: what reached the seller's side (fee included)."""
    return case(
        (deals.c.state == "completed", deals.c.amount),
        else_=deals.c.amount - func.coalesce(disputes.c.buyer_amount, deals.c.amount),
    )


def _closed() -> Any:
    return deals.outerjoin(disputes, disputes.c.deal_id == deals.c.deal_id)


async def compute(svc: Services) -> dict[str, Any]:
    now = svc.clock.now_ms()
    active_days = svc.settings.market_active_agent_days
    today = now // DAY_MS * DAY_MS
    start = today - (SERIES_DAYS - 1) * DAY_MS
    day = (listings.c.created_ts // DAY_MS).label("day")
    closed_day = (deals.c.ended_ts // DAY_MS).label("day")
    async with svc.db.read() as conn:
        first = await _first_position_since(conn, now - active_days * DAY_MS)
        active_agents = 0
        if first is not None:
            active_agents = int(
                (
                    await conn.execute(
                        select(func.count(func.distinct(events.c.sender)))
                        .select_from(events.join(agents, agents.c.user_id == events.c.sender))
                        .where(and_(events.c.position >= first, agents.c.kind == "agent"))
                    )
                ).scalar_one()
            )
        total_agents = (
            await conn.execute(
                select(func.count())
                .select_from(agents)
                .where(and_(agents.c.kind == "agent", agents.c.deactivated_ts.is_(None)))
            )
        ).scalar_one()
        active_listings = (
            await conn.execute(
                select(func.count())
                .select_from(listings)
                .where(and_(listings.c.state == "active", listings.c.expires_ts > now))
            )
        ).scalar_one()
        listed = {
            int(r.day): int(r.n)
            for r in (
                await conn.execute(
                    select(day, func.count().label("n")).where(listings.c.created_ts >= start).group_by(day)
                )
            ).all()
        }
        closed_rows = (
            await conn.execute(
                select(closed_day, func.count().label("n"), func.sum(_released_part()).label("v"))
                .select_from(_closed())
                .where(and_(deals.c.state.in_(CLOSED_STATES), deals.c.ended_ts >= start))
                .group_by(closed_day)
            )
        ).all()
        closed = {int(r.day): (int(r.n), int(r.v or 0)) for r in closed_rows}
        volume = (
            await conn.execute(
                select(func.coalesce(func.sum(_released_part()), 0))
                .select_from(_closed())
                .where(deals.c.state.in_(CLOSED_STATES))
            )
        ).scalar_one()
        by_state = {
            str(r.state): int(r.n)
            for r in (
                await conn.execute(select(deals.c.state, func.count().label("n")).group_by(deals.c.state))
            ).all()
        }
    series = []
    for n in range(SERIES_DAYS):
        key = start // DAY_MS + n
        deals_closed, day_volume = closed.get(key, (0, 0))
        series.append(
            {
                "date": datetime.fromtimestamp(key * DAY_MS / 1000, tz=UTC).strftime("%Y-%m-%d"),
                "listings": listed.get(key, 0),
                "deals_closed": deals_closed,
                "volume": day_volume,
            }
        )
    return {
        "generated_ts": now,
        "active_agents": active_agents,
        "active_agents_days": active_days,
        "agents": int(total_agents),
        "active_listings": int(active_listings),
        "listings_per_day": [{"date": s["date"], "count": s["listings"]} for s in series],
        "deals_closed_per_day": [{"date": s["date"], "count": s["deals_closed"]} for s in series],
        "daily": series,
        "deals": {
            "open": sum(by_state.get(s, 0) for s in OPEN_STATES),
            "completed": by_state.get("completed", 0),
            "resolved": by_state.get("resolved", 0),
            "cancelled": by_state.get("cancelled", 0),
        },
        "volume": int(volume),
        "volume_display": format_credits(int(volume)),
    }


async def stats(svc: Services) -> dict[str, Any]:
    """The statistics, served from a short per-process cache."""
    now = svc.clock.now_ms()
    cached = svc.cache.get(CACHE_KEY)
    cache_ms = svc.settings.market_stats_cache_seconds * 1000
    if isinstance(cached, tuple) and 0 <= now - cached[0] < cache_ms:
        result: dict[str, Any] = cached[1]
        return result
    result = await compute(svc)
    svc.cache[CACHE_KEY] = (now, result)
    return result
