"""The market's timers: expiries and auto-confirmation.

Nothing is kept in memory: every pass asks the tables what is due (`expires_ts`, `due_ts` against
the injected clock), so a restart, or a pass missed while the server was down, loses nothing.
Each change is its own writer operation that checks again that the row is still due and in the
same state, so passes of several processes (PostgreSQL) or a party acting at the same moment
never double-apply a step.

Every `market_scheduler_interval_seconds`, `run_due`:
- expires open offers past `expires_ts` (offers row -> expired; no event);
- cancels agreed deals past their funding deadline (`expire`, units go back to the listing);
- completes delivered deals past their auto-confirm time (`auto_confirm`, the seller is paid);
- expires active or reserved listings past `expires_ts` that no open deal holds. A listing an
  open deal still holds takes no new offers (offers check the expiry themselves) and is expired
  by the first pass after its last deal ends, unless that deal sold its last unit (then: sold).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import and_, exists, select, update

from clawlist.actions.bootstrap import system_user_id
from clawlist.actions.market import deals as deal_steps
from clawlist.actions.services import Services
from clawlist.core.deal_states import Action, DealState, Role, transition
from clawlist.core.errors import ClawlistError
from clawlist.storage.event_writer import WriteTx
from clawlist.storage.tables import deals, listings
from clawlist.storage.tables import offers as offers_table

log = logging.getLogger(__name__)

#: Deals handled per writer batch in one pass (the writer commits them together).
CHUNK = 200


async def _expire_offers(svc: Services) -> int:
    async def op(tx: WriteTx) -> int:
        now = tx.now_ms()
        result = await tx.conn.execute(
            update(offers_table)
            .where((offers_table.c.state == "open") & (offers_table.c.expires_ts <= now))
            .values(state="expired", updated_ts=now)
        )
        return int(result.rowcount or 0)

    return await svc.writer.run(op)


async def _expire_listings(svc: Services) -> int:
    async def op(tx: WriteTx) -> int:
        now = tx.now_ms()
        held = exists().where(
            and_(deals.c.listing_id == listings.c.listing_id, deals.c.state.in_(deal_steps.OPEN_STATES))
        )
        result = await tx.conn.execute(
            update(listings)
            .where(listings.c.state.in_(("active", "reserved")) & (listings.c.expires_ts <= now) & ~held)
            .values(state="expired", updated_ts=now)
        )
        return int(result.rowcount or 0)

    return await svc.writer.run(op)


async def _due_deals(svc: Services, state: DealState) -> list[str]:
    now = svc.clock.now_ms()
    async with svc.db.read() as conn:
        rows = (
            await conn.execute(
                select(deals.c.deal_id)
                .where((deals.c.state == state.value) & (deals.c.due_ts <= now))
                .order_by(deals.c.due_ts)
            )
        ).all()
    return [str(r.deal_id) for r in rows]


async def _step_deal(svc: Services, deal_id: str, action: Action) -> bool:
    system = system_user_id(svc)

    async def op(tx: WriteTx) -> bool:
        deal = await deal_steps.load_deal(tx, None, deal_id)
        due = deal["due_ts"]
        if due is None or int(due) > tx.now_ms():
            return False
        source = DealState.AGREED if action == Action.EXPIRE else DealState.DELIVERED
        if deal["state"] != source:
            return False  # a party moved it first
        transition(deal["state"], action, Role.SYSTEM)
        if action == Action.EXPIRE:
            await deal_steps.cancel_deal(
                tx, deal, action=action.value, actor_id=system, sender=system, note="expire"
            )
        else:
            await deal_steps.release_to_seller(
                tx, svc.settings, deal, action=action.value, actor_id=system, sender=system
            )
        return True

    try:
        return await svc.writer.run(op)
    except ClawlistError as exc:
        log.warning("scheduler could not %s deal %s: %s", action.value, deal_id, exc.message)
        return False


async def _step_all(svc: Services, deal_ids: list[str], action: Action) -> int:
    done = 0
    for start in range(0, len(deal_ids), CHUNK):
        chunk = deal_ids[start : start + CHUNK]
        results = await asyncio.gather(*(_step_deal(svc, d, action) for d in chunk))
        done += sum(1 for r in results if r)
    return done


async def run_due(svc: Services) -> dict[str, int]:
    """One pass: apply everything due now. Returns how many of each it changed."""
    out = {"offers_expired": await _expire_offers(svc)}
    out["deals_expired"] = await _step_all(svc, await _due_deals(svc, DealState.AGREED), Action.EXPIRE)
    out["deals_auto_confirmed"] = await _step_all(
        svc, await _due_deals(svc, DealState.DELIVERED), Action.AUTO_CONFIRM
    )
    # after the deals: a listing freed by an expired deal may expire in the same pass
    out["listings_expired"] = await _expire_listings(svc)
    return out


class MarketScheduler:
    """Runs `run_due` every `market_scheduler_interval_seconds` until stopped."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.passes = 0  # passes finished (tests wait on it)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="clawlist-market-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        interval = self.svc.settings.market_scheduler_interval_seconds
        while True:
            try:
                await run_due(self.svc)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("market scheduler pass failed; retrying next interval")
            self.passes += 1
            await asyncio.sleep(interval)
