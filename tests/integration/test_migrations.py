"""The migration history creates exactly the schema in storage/tables.py, on both databases.

The one exception is the listing search index of migration 0006, which SQLAlchemy tables cannot
describe: the SQLite FTS5 table `listings_fts` (and its shadow tables), and PostgreSQL's generated
column `listings.search_vector` with its GIN index `ix_listings_search`. Only these are ignored.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from clawlist.storage import migrate
from clawlist.storage.database import Database
from clawlist.storage.tables import metadata

# an external-content FTS5 table has no `_content` shadow table
FTS_TABLES = {"listings_fts"} | {f"listings_fts_{shadow}" for shadow in ("data", "idx", "docsize", "config")}


def is_search_index(diff: Any) -> bool:
    """A difference that is the listing full-text index (and nothing else)."""
    if not isinstance(diff, tuple):
        return False
    kind = diff[0]
    if kind == "remove_table":
        return str(diff[1].name) in FTS_TABLES
    if kind == "remove_column":
        return diff[2] == "listings" and diff[3].name == "search_vector"
    if kind == "remove_index":
        return str(diff[1].name) == "ix_listings_search"
    return False


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
        search_index = [d for d in differences if is_search_index(d)]
        assert [d for d in differences if not is_search_index(d)] == []
        # the search index is really there, and nothing more of it than expected
        expected = len(FTS_TABLES) if db.is_sqlite else 2
        assert len(search_index) == expected, search_index
    finally:
        await db.dispose()
