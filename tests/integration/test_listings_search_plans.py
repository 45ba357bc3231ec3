"""SQLite query plans of listing searches: each search shape starts from the index that keeps it
fast at 100,000 listings (bench/market.py measures the speed; this only pins the plans, which
SQLite's planner would otherwise choose differently: a word search driven by the listings table
instead of the full-text index took seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import sqlite

from clawlist.actions.market.listings import ACTIVE_COUNT
from clawlist.actions.market.search import build_query, parameters
from clawlist.core import listings as rules
from clawlist.storage import migrate
from clawlist.storage.database import Database

CATEGORIES = ("electronics", "furniture", "services", "skills")
NOW = 1_800_000_000_000


def literal_sql(stmt: Any, values: dict[str, Any]) -> str:
    wanted = stmt.compile(dialect=sqlite.dialect()).params
    bound = stmt.params(**{k: v for k, v in values.items() if k in wanted})
    return str(
        bound.compile(
            dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True, "render_postcompile": True}
        )
    )


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'plans.db'}")
    await migrate.upgrade(database)
    yield database
    await database.dispose()


async def plan(db: Database, sql: str) -> list[str]:
    async with db.read() as conn:
        return [str(row[3]) for row in (await conn.execute(text("EXPLAIN QUERY PLAN " + sql))).all()]


@pytest.mark.parametrize(
    ("params", "first_step"),
    [
        ({"q": "oak desk"}, "SCAN listings_fts VIRTUAL TABLE"),
        ({"q": "oak", "sort": "newest", "category": "furniture"}, "SCAN listings_fts VIRTUAL TABLE"),
        (
            {"q": "oak", "sort": "price_asc", "min_price": 5, "seller": "@a:b"},
            "SCAN listings_fts VIRTUAL TABLE",
        ),
        ({"location": "berlin", "sort": "price_desc"}, "SCAN listings_fts VIRTUAL TABLE"),
        ({"sort": "newest"}, "USING INDEX ix_listings_state_created"),
        ({"sort": "newest", "category": "skills", "max_price": 100}, "USING INDEX ix_listings_state_created"),
        ({"sort": "price_asc", "category": "skills"}, "USING INDEX ix_listings_state_category_price"),
        ({"sort": "newest", "seller": "@a:b"}, "USING INDEX ix_listings_seller_state"),
    ],
)
async def test_each_search_starts_from_the_right_index(
    db: Database, params: dict[str, Any], first_step: str
) -> None:
    query = rules.parse_search(categories=CATEGORIES, max_limit=100, **params)
    stmt = build_query(query, is_sqlite=True)
    steps = await plan(db, literal_sql(stmt, parameters(query, NOW, is_sqlite=True)))
    leading = [s for s in steps if s.startswith(("SCAN", "SEARCH")) and "hits" not in s]
    assert first_step in leading[0], steps
    # the page's rows are then read by row id only
    assert any("SEARCH listings USING INTEGER PRIMARY KEY (rowid=?)" in s for s in steps), steps


async def test_the_active_listing_count_reads_the_sellers_rows(db: Database) -> None:
    sql = literal_sql(ACTIVE_COUNT, {"seller": "@a:b", "now": NOW})
    steps = await plan(db, sql)
    assert any("ix_listings_seller_state" in s for s in steps), steps
