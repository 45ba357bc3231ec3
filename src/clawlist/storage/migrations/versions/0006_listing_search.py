"""listing search: SQLite FTS5 table / PostgreSQL tsvector column with a GIN index

The full-text index holds only the words of a listing (title, tags, description, and its place:
location, region, country) and, on SQLite, its category (so a category filter narrows a word
search inside the index); every filter (state, category, price, seller, expiry) reads the
`listings` table. The database keeps the index right in the same transaction as the row: on
SQLite, triggers feed `listings_fts` (an FTS5 index over the rows' text, keyed by rowid); on
PostgreSQL, `search_vector` is a generated column. Neither is in storage/tables.py (SQLAlchemy
cannot describe them); the migration test ignores exactly these objects.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = "title, tags, description, location, region, country, category"
_NEW = "new.title, new.tags, new.description, new.location, new.region, new.country, new.category"
_OLD = "old.title, old.tags, old.description, old.location, old.region, old.country, old.category"
# (constant text only: no value ever reaches these statements)
_ADD = f"INSERT INTO listings_fts (rowid, {_COLUMNS}) VALUES (new.rowid, {_NEW});"  # noqa: S608
_REMOVE = (
    f"INSERT INTO listings_fts (listings_fts, rowid, {_COLUMNS}) "  # noqa: S608
    f"VALUES ('delete', old.rowid, {_OLD});"
)

# An external-content FTS5 table: it indexes the listings rows' text (keyed by their rowid) and
# stores no copy of it. Porter stemming over unicode61 (case- and accent-insensitive). If rowids
# ever changed (SQLite's VACUUM keeps them in practice, but does not promise to for a table
# without an INTEGER PRIMARY KEY), `INSERT INTO listings_fts(listings_fts) VALUES('rebuild')`
# rebuilds the index from the rows.
SQLITE_UP = [
    f"CREATE VIRTUAL TABLE listings_fts USING fts5({_COLUMNS}, content='listings', "
    "content_rowid='rowid', tokenize = 'porter unicode61 remove_diacritics 2')",
    f"CREATE TRIGGER listings_fts_insert AFTER INSERT ON listings BEGIN {_ADD} END",
    f"CREATE TRIGGER listings_fts_delete AFTER DELETE ON listings BEGIN {_REMOVE} END",
    # Listings are not edited, but a redaction scrubs the text: keep the index in step.
    f"CREATE TRIGGER listings_fts_update AFTER UPDATE OF {_COLUMNS} ON listings BEGIN {_REMOVE} {_ADD} END",
    "INSERT INTO listings_fts (listings_fts) VALUES ('rebuild')",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS listings_fts_update",
    "DROP TRIGGER IF EXISTS listings_fts_delete",
    "DROP TRIGGER IF EXISTS listings_fts_insert",
    "DROP TABLE IF EXISTS listings_fts",
]

# Weights: A title, B tags, C description, D place (a location filter matches D lexemes only).
POSTGRES_UP = [
    "ALTER TABLE listings ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
    "setweight(to_tsvector('english', title), 'A') || "
    "setweight(to_tsvector('english', tags), 'B') || "
    "setweight(to_tsvector('english', description), 'C') || "
    "setweight(to_tsvector('english', coalesce(location, '') || ' ' || coalesce(region, '') || ' ' "
    "|| coalesce(country, '')), 'D')) STORED",
    "CREATE INDEX ix_listings_search ON listings USING gin (search_vector)",
]
POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS ix_listings_search",
    "ALTER TABLE listings DROP COLUMN IF EXISTS search_vector",
]


def upgrade() -> None:
    statements = SQLITE_UP if op.get_bind().dialect.name == "sqlite" else POSTGRES_UP
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    statements = SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else POSTGRES_DOWN
    for statement in statements:
        op.execute(statement)
