"""SQLite query plans of listing searches: each search shape starts from the index that keeps it
fast at 100,000 listings (bench/market.py measures the speed; this pins the plans, which SQLite's
planner would otherwise choose differently: a word search driven by the listings table instead of
the full-text index took seconds). And the SQLite-only shortcuts of `search` (relevance ranked in
the full-text index first, word searches walking a listings index) return exactly what the plain
statement returns, page by page, on a table large enough to take them."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import sqlite

from clawlist.actions.market import search as search_module
from clawlist.actions.market.listings import ACTIVE_COUNT
from clawlist.actions.market.search import (
    WALK_MIN_MATCHES,
    build_query,
    parameters,
    relevance_page_query,
    reputation_chunk_query,
    reputation_tail_query,
    search,
)
from clawlist.actions.services import Services, build_services
from clawlist.core import listings as rules
from clawlist.core.clock import FrozenClock
from clawlist.settings import Settings
from clawlist.storage import migrate
from clawlist.storage.database import Database
from clawlist.storage.tables import listings

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


def leading_steps(steps: list[str]) -> list[str]:
    return [s for s in steps if s.startswith(("SCAN", "SEARCH")) and "hits" not in s]


@pytest.mark.parametrize(
    "params",
    [
        {"sort": "reputation"},
        {"sort": "reputation", "category": "furniture", "max_price": 100},
        {"sort": "reputation", "category": "skills", "cursor": "after"},
    ],
)
async def test_reputation_without_words_reads_by_seller_then_newest(
    db: Database, params: dict[str, Any]
) -> None:
    """The rated sellers' listings through ix_listings_seller_state, seller by seller from the
    scores parameter (not by walking every listing); the listings of sellers scoring 0 by walking
    ix_listings_state_created newest first, the scores read once as a list to leave out."""
    if params.get("cursor"):
        first = rules.parse_search(categories=CATEGORIES, max_limit=100, **{**params, "cursor": None})
        params = {**params, "cursor": rules.encode_cursor(first.sort, first.digest, (2, NOW, "$x"))}
    query = rules.parse_search(categories=CATEGORIES, max_limit=100, **params)
    values = {**parameters(query, NOW, is_sqlite=True), "scores": '{"@a:b": 3, "@c:d": 1}'}
    steps = await plan(db, literal_sql(reputation_chunk_query(query, is_sqlite=True), values))
    leading = leading_steps(steps)
    assert leading[0].startswith("SCAN") and "VIRTUAL TABLE" in leading[0], steps  # json_each
    assert "SEARCH listings USING INDEX ix_listings_seller_state (seller=?)" in leading[1], steps
    steps = await plan(db, literal_sql(reputation_tail_query(query, is_sqlite=True), values))
    assert "USING INDEX ix_listings_state_created" in leading_steps(steps)[0], steps
    assert any(s.startswith("LIST SUBQUERY") for s in steps), steps


async def test_reputation_with_words_starts_from_the_full_text_index(db: Database) -> None:
    """Every match looks its seller's score up in an index built once per statement, instead of
    scanning the scores for each match."""
    query = rules.parse_search(categories=CATEGORIES, max_limit=100, q="oak desk", sort="reputation")
    values = {**parameters(query, NOW, is_sqlite=True), "scores": '{"@a:b": 3}'}
    steps = await plan(db, literal_sql(build_query(query, is_sqlite=True), values))
    leading = [s for s in leading_steps(steps) if "VIRTUAL TABLE INDEX 1:" not in s]  # materializing
    assert "SCAN listings_fts VIRTUAL TABLE" in leading[0], steps
    assert any("SEARCH scores USING AUTOMATIC COVERING INDEX (seller=?)" in s for s in steps), steps
    assert any("SEARCH listings USING INTEGER PRIMARY KEY (rowid=?)" in s for s in steps), steps


@pytest.mark.parametrize(
    ("params", "first_step"),
    [
        ({"q": "oak", "sort": "newest"}, "SEARCH listings USING INDEX ix_listings_state_created (state=?)"),
        (
            {"q": "oak", "sort": "newest", "category": "furniture", "min_price": 10},
            "SEARCH listings USING INDEX ix_listings_state_created (state=?)",
        ),
        ({"location": "berlin", "sort": "newest", "state": "sold"}, "ix_listings_state_created (state=?)"),
        (
            {"q": "oak", "sort": "price_desc", "category": "furniture", "max_price": 100},
            "USING INDEX ix_listings_state_category_price (state=? AND category=? AND price<?)",
        ),
    ],
)
async def test_word_searches_with_many_matches_walk_the_listings_index(
    db: Database, params: dict[str, Any], first_step: str
) -> None:
    """Newest first or by price within a category: walk the index in order, checking each row
    against the matches (a list built once from the full-text index), and stop after a page."""
    query = rules.parse_search(categories=CATEGORIES, max_limit=100, **params)
    assert search_module.walkable(query)
    stmt = build_query(query, is_sqlite=True, walk=True)
    steps = await plan(db, literal_sql(stmt, parameters(query, NOW, is_sqlite=True)))
    assert first_step in leading_steps(steps)[0], steps
    assert any(s.startswith("LIST SUBQUERY") for s in steps), steps
    assert any("SCAN listings_fts VIRTUAL TABLE" in s for s in steps), steps
    for other in ({**params, "sort": "price_asc", "category": None}, {**params, "seller": "@a:b"}):
        assert not search_module.walkable(rules.parse_search(categories=CATEGORIES, max_limit=100, **other))


async def test_relevance_ranks_in_the_full_text_index_before_reading_rows(db: Database) -> None:
    query = rules.parse_search(categories=CATEGORIES, max_limit=100, q="oak desk", min_price=5)
    values = {**parameters(query, NOW, is_sqlite=True), "n": 42}
    steps = await plan(db, literal_sql(relevance_page_query(query), values))
    # the candidates are ranked in the index alone; only they are then read by row id
    at = {step: i for i, step in enumerate(steps)}
    assert at["MATERIALIZE cand"] < at["SCAN listings_fts VIRTUAL TABLE INDEX 0:M7"], steps
    assert (
        "SCAN cand" in at and at["SCAN cand"] < at["SEARCH listings USING INTEGER PRIMARY KEY (rowid=?)"]
    ), steps


# -- the shortcuts return what the plain statement returns ------------------------------------------

NOUNS = ("chair", "desk", "lamp", "phone", "cable")
WORDS = ("oak", "steel", "vintage", "quiet", "red", "blue", "spare", "boxed")
PLACES = (("Berlin", "DE"), ("Paris", "FR"), ("Rome", "IT"))


@pytest.fixture
async def big(tmp_path: Path) -> Any:
    """Enough listings (inserted as rows; the full-text triggers index them) that common words
    match well over WALK_MIN_MATCHES and relevance needs several candidate rounds; creation
    times are shuffled against row ids, and some rows are sold, withdrawn or expired."""
    svc = build_services(
        Settings(data_dir=tmp_path / "data", server_name="test.local", market_search_max_limit=1000),
        clock=FrozenClock(NOW),
    )
    await migrate.upgrade(svc.db)
    rng = random.Random(7)
    rows = []
    for i in range(3 * WALK_MIN_MATCHES):
        place, country = rng.choice(PLACES)
        rows.append(
            {
                "listing_id": f"$listing{i:05d}",
                "room_id": "!room:test.local",
                "seller": f"@seller{i % 17}:test.local",
                "title": f"{rng.choice(WORDS).capitalize()} {rng.choice(NOUNS)}",
                "description": " ".join(rng.choices(WORDS + NOUNS, k=rng.randint(0, 12))),
                "category": rng.choice(CATEGORIES),
                "price": rng.randint(1, 400) * 25,  # many equal prices: ties by listing id
                "quantity": 1,
                "available": 1,
                "condition": None,
                "location": place,
                "country": country,
                "region": None,
                "tags": "[]",
                "images": "[]",
                "state": rng.choice(("active",) * 8 + ("sold", "withdrawn")),
                "created_ts": NOW - rng.randint(1, 200) * 1000,  # equal times too
                "updated_ts": NOW,
                "expires_ts": NOW + 1000 if rng.random() < 0.9 else NOW - 1,
            }
        )
    # equal relevance: identical listings whose ids do not follow their row ids (ties are ordered
    # by listing id, so the best-ranked candidates alone cannot decide the page)
    for n, i in enumerate(rng.sample(range(10_000), 150)):
        rows.append({**rows[n], "listing_id": f"$tie{i:05d}", "title": "Brass lamp", "description": ""})
    async with svc.db.write() as conn:
        await conn.execute(listings.insert(), rows)
    yield svc
    await svc.db.dispose()


async def plain(svc: Services, params: dict[str, Any]) -> list[str]:
    """Every matching listing id in order, from the single statement alone (no shortcut)."""
    query = rules.parse_search(categories=CATEGORIES, max_limit=10_000, **params, limit=10_000)
    values = parameters(query, NOW, is_sqlite=True)
    async with svc.db.read() as conn:
        return [r.listing_id for r in (await conn.execute(build_query(query, is_sqlite=True), values)).all()]


@pytest.mark.parametrize(
    "params",
    [
        {"q": "chair", "sort": "newest"},
        {"q": "oak", "sort": "newest", "min_price": 2000, "max_price": 6000},
        {"q": "chair", "sort": "newest", "category": "furniture"},
        {"location": "berlin", "sort": "newest"},
        {"q": "blue", "sort": "newest", "state": "sold"},
        {"q": "lamp", "sort": "price_asc", "category": "skills"},
        {"q": "lamp oak", "sort": "price_desc", "category": "services", "max_price": 5000},
        {"q": "chair"},
        {"q": "oak", "min_price": 9000},
        {"q": "spare", "category": "electronics"},
        {"q": "vintage quiet"},
        {"q": "chair", "min_price": 9800},
        {"q": "brass"},
        {"q": "brass lamp", "category": "furniture"},
    ],
)
async def test_shortcuts_page_exactly_like_the_plain_statement(big: Services, params: dict[str, Any]) -> None:
    expected = await plain(big, params)
    assert expected, params
    for limit in (7, 50):
        seen: list[str] = []
        cursor = None
        while True:
            page = await search(big, **params, limit=limit, cursor=cursor)
            seen += [x["listing_id"] for x in page["listings"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected, (params, limit)


async def test_the_walk_is_taken_only_with_many_matches(big: Services) -> None:
    async with big.db.read() as conn:
        for words, many in ((("chair",), True), (("vintage", "quiet", "lamp"), False)):
            values = {"match": rules.fts5_expression(words, ())}
            assert await search_module._many_matches(conn, values) is many, words


async def test_the_active_listing_count_reads_the_sellers_rows(db: Database) -> None:
    sql = literal_sql(ACTIVE_COUNT, {"seller": "@a:b", "now": NOW})
    steps = await plan(db, sql)
    assert any("ix_listings_seller_state" in s for s in steps), steps
