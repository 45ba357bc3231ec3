"""What every action gets: settings, database, writer, bus, clock and randomness.

Built once by the composition root (`clawlist.app.create_app` or the CLI's admin commands).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from clawlist.actions.ephemeral import EphemeralHub
from clawlist.actions.feed import EventFeed
from clawlist.bus.base import WAKEUP, Bus
from clawlist.bus.factory import open_bus
from clawlist.core.clock import Clock, Randomness, SystemClock, SystemRandomness
from clawlist.settings import Settings
from clawlist.storage import migrate
from clawlist.storage.database import Database
from clawlist.storage.event_store import StoredEvent
from clawlist.storage.event_writer import EventWriter

if TYPE_CHECKING:
    from clawlist.actions.market.scheduler import MarketScheduler


@dataclass
class Services:
    settings: Settings
    db: Database
    writer: EventWriter
    bus: Bus
    clock: Clock
    rng: Randomness
    feed: EventFeed
    ephemeral: EphemeralHub
    cache: dict[str, Any] = field(default_factory=dict)
    market_scheduler: MarketScheduler | None = None


def build_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    rng: Randomness | None = None,
    bus: Bus | None = None,
    schema: str | None = None,
) -> Services:
    clock = clock or SystemClock()
    rng = rng or SystemRandomness()
    bus = bus or open_bus(settings.bus_url)
    db = Database(
        settings.db_url,
        schema=schema or settings.database_schema,
        sqlite_cache_mb=settings.sqlite_cache_mb,
        sqlite_mmap_mb=settings.sqlite_mmap_mb,
    )
    feed = EventFeed(
        db,
        bus,
        buffer_size=settings.feed_buffer_events,
        buffer_bytes=settings.feed_buffer_bytes,
        poll_interval_s=settings.feed_poll_interval_seconds,
    )
    hub = EphemeralHub(bus, clock, idle_after_s=settings.presence_idle_seconds)

    async def publish(appended: list[StoredEvent]) -> None:
        feed.poke()  # this process reads at once, whatever the bus does
        rooms = sorted({e.room_id for e in appended})
        await bus.publish(WAKEUP, orjson.dumps({"p": appended[-1].position, "r": rooms}))

    writer = EventWriter(
        db,
        clock,
        on_commit=publish,
        batch_max=settings.write_batch_max,
        window_ms=settings.write_batch_window_ms,
        max_event_bytes=settings.max_event_bytes,
    )
    return Services(
        settings=settings, db=db, writer=writer, bus=bus, clock=clock, rng=rng, feed=feed, ephemeral=hub
    )


async def start_services(services: Services, *, run_migrations: bool = True) -> None:
    if run_migrations:
        await migrate.upgrade(services.db)
    await services.bus.start()
    await services.writer.start()
    await services.feed.start()
    await services.ephemeral.start()
    services.db.start_checkpointer(services.settings.sqlite_checkpoint_interval_seconds)
    # imported here: the scheduler's modules import this one
    from clawlist.actions.market.scheduler import MarketScheduler

    services.market_scheduler = MarketScheduler(services)
    await services.market_scheduler.start()


async def stop_services(services: Services) -> None:
    if services.market_scheduler is not None:
        await services.market_scheduler.stop()
    await services.ephemeral.stop()
    await services.feed.stop()
    await services.writer.stop()
    await services.bus.stop()
    await services.db.dispose()


async def migrate_database(settings: Settings) -> tuple[str | None, str | None]:
    """Apply migrations without starting anything else (`clawlist migrate`)."""
    db = Database(settings.db_url, schema=settings.database_schema)
    try:
        return await migrate.upgrade(db)
    finally:
        await db.dispose()
