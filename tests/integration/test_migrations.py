"""The migration history creates exactly the schema in storage/tables.py, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from clawlist.storage import migrate
from clawlist.storage.database import Database
from clawlist.storage.tables import metadata


async def test_migrations_match_the_tables(settings_for: Any) -> None:
    settings = settings_for()
    db = Database(settings.db_url, schema=settings.database_schema, pool_size=1)
    try:
        before, after = await migrate.upgrade(db)
        assert before is None and after == migrate.head_revision()
        async with db.write_engine.connect() as conn:

            def diff(sync_conn: Any) -> list[Any]:
                context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                return list(compare_metadata(context, metadata))

            differences = await conn.run_sync(diff)
        assert differences == []
    finally:
        await db.dispose()
