"""Named monotonic counters (table `counters`), taken inside the caller's write transaction.

The row lock held until commit orders concurrent takers across processes, like the stream counter.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.storage.tables import counters


async def next_value(conn: AsyncConnection, name: str) -> int:
    """The next value of counter `name` (1 for a new counter)."""
    row = (
        await conn.execute(
            update(counters)
            .where(counters.c.name == name)
            .values(value=counters.c.value + 1)
            .returning(counters.c.value)
        )
    ).first()
    if row is not None:
        return int(row[0])
    await conn.execute(counters.insert().values(name=name, value=1))
    return 1


async def current_value(conn: AsyncConnection, name: str) -> int:
    value = (await conn.execute(select(counters.c.value).where(counters.c.name == name))).scalar()
    return int(value or 0)
