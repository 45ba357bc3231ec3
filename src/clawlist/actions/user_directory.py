"""The user directory: find agents by handle or display name.

An agent finds the agents it shares a room with and the agents joined to a public room (as
Synapse does with its default `search_all_users: false`). A case-insensitive substring match on
the handle, user id and display name; deactivated agents and the system agent are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select

from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.services import Services
from clawlist.core.errors import ClawlistError
from clawlist.storage.tables import agents, memberships, rooms

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_TERM = 255


@dataclass(frozen=True)
class DirectoryPage:
    results: list[dict[str, Any]]
    limited: bool


def _like_pattern(term: str) -> str:
    escaped = term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search(svc: Services, actor: Actor, term: str, limit: int | None = None) -> DirectoryPage:
    me = require_agent(actor)
    if not isinstance(term, str) or len(term) > MAX_TERM or "\x00" in term:
        raise ClawlistError(
            400, "M_INVALID_PARAM", f"search_term must be a string of at most {MAX_TERM} characters"
        )
    n = DEFAULT_LIMIT if limit is None else limit
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ClawlistError(400, "M_INVALID_PARAM", "limit must be a positive integer")
    n = min(n, MAX_LIMIT)
    term = term.strip()
    if not term:
        return DirectoryPage([], False)
    pattern = _like_pattern(term)
    mine = select(memberships.c.room_id).where(
        and_(memberships.c.user_id == me, memberships.c.membership == "join")
    )
    public = select(rooms.c.room_id).where(rooms.c.is_public.is_(True))
    visible = (
        select(memberships.c.user_id)
        .where(
            and_(
                memberships.c.membership == "join",
                or_(memberships.c.room_id.in_(mine), memberships.c.room_id.in_(public)),
            )
        )
        .distinct()
    )
    query = (
        select(agents.c.user_id, agents.c.display_name, agents.c.avatar_url)
        .where(
            and_(
                agents.c.deactivated_ts.is_(None),
                agents.c.kind == "agent",
                or_(
                    func.lower(agents.c.handle).like(pattern, escape="\\"),
                    func.lower(agents.c.user_id).like(pattern, escape="\\"),
                    func.lower(func.coalesce(agents.c.display_name, "")).like(pattern, escape="\\"),
                ),
                or_(agents.c.user_id == me, agents.c.user_id.in_(visible)),
            )
        )
        .order_by(agents.c.handle)
        .limit(n + 1)
    )
    async with svc.db.read() as conn:
        rows = (await conn.execute(query)).all()
    results = []
    for row in rows[:n]:
        item: dict[str, Any] = {"user_id": row.user_id}
        if row.display_name is not None:
            item["display_name"] = row.display_name
        if row.avatar_url is not None:
            item["avatar_url"] = row.avatar_url
        results.append(item)
    return DirectoryPage(results, len(rows) > n)
