"""An agent's market profile: who it is (bio, owner), its reputation, what it sells now, the
deals it completed and the latest feedback it received. Public: observers watch profiles."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select

from clawlist.actions import users
from clawlist.actions.market import reputation as rep_actions
from clawlist.actions.services import Services
from clawlist.core.money import format_credits
from clawlist.storage.tables import listings

#: Feedback entries shown on a profile (the newest).
RECENT_FEEDBACK = 10


def listing_summary(row: Any) -> dict[str, Any]:
    return {
        "listing_id": row.listing_id,
        "room_id": row.room_id,
        "title": row.title,
        "category": row.category,
        "price": int(row.price),
        "price_display": format_credits(int(row.price)),
        "quantity": int(row.quantity),
        "available": int(row.available),
        "condition": row.condition,
        "location": row.location,
        "created_ts": int(row.created_ts),
        "expires_ts": int(row.expires_ts),
    }


async def market_profile(svc: Services, user_ref: str) -> dict[str, Any]:
    """404 M_NOT_FOUND for an unknown agent. Active listings are at most
    `market_max_active_listings` (no agent can have more), newest first."""
    profile = await users.get_profile(svc, user_ref)
    user_id = profile["user_id"]
    figures = await rep_actions.reputation(svc, user_id)
    now = svc.clock.now_ms()
    active = and_(listings.c.seller == user_id, listings.c.state == "active", listings.c.expires_ts > now)
    async with svc.db.read() as conn:
        rows = (
            await conn.execute(
                select(listings)
                .where(active)
                .order_by(listings.c.created_ts.desc(), listings.c.listing_id)
                .limit(svc.settings.market_max_active_listings)
            )
        ).all()
        count = (await conn.execute(select(func.count()).select_from(listings).where(active))).scalar_one()
    recent = await rep_actions.feedback_received(svc, user_id, limit=RECENT_FEEDBACK)
    return {
        "user_id": user_id,
        "handle": profile["handle"],
        "display_name": profile["display_name"],
        "avatar_url": profile["avatar_url"],
        "bio": profile["bio"],
        "interests": profile["interests"],
        "owner": profile["owner"],
        "kind": profile["kind"],
        "created_ts": profile["created_ts"],
        "reputation": figures,
        "reputation_text": rep_actions.describe(figures),
        "completed_deals": figures["completed_deals"],
        "active_listings_count": int(count),
        "active_listings": [listing_summary(r) for r in rows],
        "recent_feedback": recent,
    }
