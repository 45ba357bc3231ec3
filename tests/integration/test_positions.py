"""Positions are gapless: a reader never sees position N+1 while N is uncommitted.

Several independent writers (each with its own engine and batching writer, as separate server
processes would have) append concurrently while a reader polls. The reader must see positions
1, 2, 3, ... strictly in order with no hole, ever, and in the end every appended event.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from clawlist.core.clock import SystemClock
from clawlist.settings import Settings
from clawlist.storage import migrate
from clawlist.storage.database import Database
from clawlist.storage.event_writer import EventWriter, NewEvent, WriteTx
from clawlist.storage.tables import events, rooms

WRITERS = 4
TASKS_PER_WRITER = 25
EVENTS_PER_TASK = 12


def _db(settings: Settings) -> Database:
    return Database(settings.db_url, schema=settings.database_schema, pool_size=4)


async def _new_room(db: Database, room_id: str) -> str:
    async with db.write() as conn:
        await conn.execute(
            rooms.insert().values(
                room_id=room_id,
                creator="@a:test.local",
                room_type=None,
                is_public=True,
                is_direct=False,
                depth=0,
                created_ts=0,
            )
        )
    return room_id


async def test_concurrent_writers_never_expose_a_gap(settings_for: Any) -> None:
    settings = settings_for()
    setup = _db(settings)
    await migrate.upgrade(setup)
    room_id = await _new_room(setup, "!gapless:test.local")
    writers = []
    for _ in range(WRITERS):
        writer = EventWriter(_db(settings), SystemClock(), batch_max=16, window_ms=0.5)
        await writer.start()
        writers.append(writer)

    total = WRITERS * TASKS_PER_WRITER * EVENTS_PER_TASK
    done = asyncio.Event()
    violations: list[str] = []
    seen: list[int] = []

    async def reader() -> None:
        reader_db = _db(settings)
        last = 0
        try:
            while True:
                async with reader_db.read() as conn:
                    rows = (
                        (
                            await conn.execute(
                                select(events.c.position)
                                .where(events.c.position > last)
                                .order_by(events.c.position)
                            )
                        )
                        .scalars()
                        .all()
                    )
                for position in rows:
                    if position != last + 1:
                        violations.append(f"saw {position} right after {last}")
                    last = position
                    seen.append(position)
                if done.is_set() and last >= total:
                    return
                if done.is_set() and not rows:
                    return
                await asyncio.sleep(0)
        finally:
            await reader_db.dispose()

    async def submitter(writer: EventWriter, n: int) -> None:
        for i in range(EVENTS_PER_TASK):

            async def op(tx: WriteTx, i: int = i) -> int:
                stored = await tx.append(
                    NewEvent(
                        room_id=room_id,
                        type="m.room.message",
                        sender="@a:test.local",
                        content={"msgtype": "m.text", "body": f"{n}-{i}"},
                    )
                )
                return stored.position

            await writer.run(op)

    read_task = asyncio.create_task(reader())
    await asyncio.gather(*(submitter(w, n) for w in writers for n in range(TASKS_PER_WRITER)))
    done.set()
    await asyncio.wait_for(read_task, 60)
    for writer in writers:
        await writer.stop()
        await writer.db.dispose()
    async with setup.read() as conn:
        stored = (await conn.execute(select(events.c.position).order_by(events.c.position))).scalars().all()
    await setup.dispose()

    assert violations == []
    assert list(stored) == list(range(1, total + 1))
    assert seen == list(range(1, total + 1))


async def test_a_failed_operation_leaves_no_hole(settings_for: Any) -> None:
    """An operation that raises inside a batch is rolled back alone; positions stay contiguous."""
    settings = settings_for()
    db = _db(settings)
    await migrate.upgrade(db)
    room_id = await _new_room(db, "!holes:test.local")
    writer = EventWriter(db, SystemClock(), batch_max=64, window_ms=5)
    await writer.start()

    async def op(tx: WriteTx, fail: bool) -> int:
        stored = await tx.append(
            NewEvent(
                room_id=room_id,
                type="m.room.message",
                sender="@a:test.local",
                content={"msgtype": "m.text", "body": "x"},
            )
        )
        if fail:
            raise ValueError("boom")
        return stored.position

    results = await asyncio.gather(
        *(writer.run(lambda tx, f=(i % 3 == 0): op(tx, f)) for i in range(30)), return_exceptions=True
    )
    await writer.stop()
    async with db.read() as conn:
        stored = (
            await conn.execute(select(events.c.position, events.c.depth).order_by(events.c.position))
        ).all()
    await db.dispose()
    ok = sorted(r for r in results if isinstance(r, int))
    assert len(ok) == 20
    assert sum(isinstance(r, ValueError) for r in results) == 10
    assert [p for p, _ in stored] == list(range(1, 21)) == ok
    assert [d for _, d in stored] == list(range(1, 21))


async def test_concurrent_audit_appends_keep_one_chain(settings_for: Any) -> None:
    """Many transactions appending to the audit log at once still form a single verifiable chain."""
    from clawlist.actions import audit

    settings = settings_for()
    setup = _db(settings)
    await migrate.upgrade(setup)
    dbs = [_db(settings) for _ in range(4)]

    async def append(db: Database, n: int) -> None:
        async with db.write() as conn:
            await audit.record(
                conn, ts=n, actor=f"@a{n}:test.local", action="test.append", is_sqlite=db.is_sqlite
            )

    await asyncio.gather(*(append(dbs[i % 4], i) for i in range(40)))
    async with setup.read() as conn:
        intact, count = await audit.verify_chain(conn)
    for db in (*dbs, setup):
        await db.dispose()
    assert (intact, count) == (True, 40)
