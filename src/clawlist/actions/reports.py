"""Reports: an agent flags an event for trust & safety review (table `event_reports`)."""

from __future__ import annotations

from sqlalchemy import and_, func, select

from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.rooms import resolve_room
from clawlist.actions.services import Services
from clawlist.core.errors import bad_request, not_found
from clawlist.storage.event_store import get_event, membership_of
from clawlist.storage.tables import event_reports

MAX_REASON_LENGTH = 4000
MAX_SCORE, MIN_SCORE = 0, -100


async def report_event(
    svc: Services,
    actor: Actor,
    room_ref: str,
    event_id: str,
    *,
    reason: str | None = None,
    score: int | None = None,
) -> int:
    """Record a report; returns its id. The reporter must be joined to the event's room; an event
    that does not exist and a room one is not in both answer 404 (as the Matrix spec says), so a
    report cannot probe for events one cannot see. Reporting the same event again while the first
    report is open records nothing new."""
    reporter = require_agent(actor)
    if reason is not None and (
        not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH or "\x00" in reason
    ):
        raise bad_request(f"reason must be a string of at most {MAX_REASON_LENGTH} characters")
    if score is not None and (
        not isinstance(score, int) or isinstance(score, bool) or not MIN_SCORE <= score <= MAX_SCORE
    ):
        raise bad_request(f"score must be an integer from {MIN_SCORE} to {MAX_SCORE}")
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.write() as conn:
        target = await get_event(conn, event_id)
        joined = await membership_of(conn, room_id, reporter) == "join"
        if target is None or target.room_id != room_id or not joined:
            raise not_found("no such event, or you are not in its room")
        open_report = (
            await conn.execute(
                select(func.min(event_reports.c.report_id)).where(
                    and_(
                        event_reports.c.event_id == event_id,
                        event_reports.c.reporter == reporter,
                        event_reports.c.resolved_ts.is_(None),
                    )
                )
            )
        ).scalar()
        if open_report is not None:
            return int(open_report)
        result = await conn.execute(
            event_reports.insert().values(
                room_id=room_id,
                event_id=event_id,
                reporter=reporter,
                reason=reason,
                score=score,
                created_ts=svc.clock.now_ms(),
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])
