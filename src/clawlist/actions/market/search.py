"""Listing search: one interface over SQLite FTS5 and PostgreSQL full-text search.

Words (`q`) and the place (`location`) go to the full-text index (migration 0006): on SQLite the
FTS5 table `listings_fts` over the listings rows (porter stemming; relevance = bm25 weighting
title 10, tags 5, place 2, description 1), on PostgreSQL the generated `listings.search_vector`
with its GIN index (english stemming; relevance = ts_rank with weights title A, tags B,
description C, place D). Every other filter reads the `listings` row. Pages are keyset-paginated
on the sort key plus the listing id, so a page never repeats or skips a listing whose sort key
does not change between requests.

A search runs in two steps inside one statement: the matching rows are ordered by their sort key
alone (a row id and a few numbers), and only the page's rows are then read in full.

`sort=reputation` orders by the seller's reputation; for now that is a proxy: the number of the
seller's deals that ended completed or resolved (the `deals` table), then newest first.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    table,
)
from sqlalchemy.sql.elements import BindParameter

from clawlist.actions.market.listings import listing_dict, listing_rules
from clawlist.actions.services import Services
from clawlist.core import listings as rules
from clawlist.storage.tables import deals, listings

REPUTATION_DEAL_STATES = ("completed", "resolved")
#: bm25 weights per FTS5 column: title, tags, description, location, region, country, category.
BM25_WEIGHTS = (10.0, 5.0, 1.0, 2.0, 2.0, 2.0, 0.0)
PG_TEXT_CONFIG = "english"

_fts = table("listings_fts")
_FTS: ColumnElement[Any] = literal_column("listings_fts")
_FTS_ROWID: ColumnElement[Any] = literal_column("listings_fts.rowid", BigInteger)
_ROWID: ColumnElement[Any] = literal_column("listings.rowid", BigInteger)


def _planner_blind(col: Any, blind: bool) -> ColumnElement[Any]:
    """SQLite: `+column` keeps a term from choosing an index (the query optimizer's documented way).

    Without it, `expires_ts > now` would pick ix_listings_state_expires and sort every active
    listing, where walking ix_listings_state_created in order stops after one page; and a word
    search must start from the full-text index, then fetch each match by row id."""
    if not blind:
        return cast(ColumnElement[Any], col)
    return literal_column(f"+{col.table.name}.{col.name}", type_=col.type)


def _filters(
    query: rules.SearchQuery, *, is_sqlite: bool, by_seller: bool | None = None
) -> list[ColumnElement[bool]]:
    """The row filters; on SQLite with the index hints described in `_planner_blind`
    (`by_seller`: the rows are read by seller, default: when the search names one)."""
    by_seller = query.seller is not None if by_seller is None else by_seller
    words = bool(query.terms or query.location_terms)
    everything = is_sqlite and words  # the full-text index leads: no listings index at all

    def col(c: Any, blind: bool = False) -> ColumnElement[Any]:
        return _planner_blind(c, is_sqlite and (blind or everything))

    out: list[ColumnElement[bool]] = []
    if query.state != "any":
        # one seller's listings: read them by (seller, state), not by walking every active listing
        state = col(listings.c.state, by_seller)
        expires = col(listings.c.expires_ts, True)
        now = bindparam("now", type_=BigInteger)
        if query.state == rules.ACTIVE:
            out += [state == rules.ACTIVE, expires > now]
        elif query.state == rules.EXPIRED:
            out.append(or_(state == rules.EXPIRED, and_(state == rules.ACTIVE, expires <= now)))
        else:
            out.append(state == bindparam("state"))
    if query.category is not None:
        # newest first: walk the (state, created) index and check the category on the way
        out.append(col(listings.c.category, query.sort == "newest") == bindparam("category"))
    if query.min_price is not None:
        out.append(col(listings.c.price) >= bindparam("min_price"))
    if query.max_price is not None:
        out.append(col(listings.c.price) <= bindparam("max_price"))
    if query.seller is not None:
        out.append(col(listings.c.seller) == bindparam("seller"))
    return out


def _shape(query: rules.SearchQuery, is_sqlite: bool) -> tuple[Any, ...]:
    """What decides the statement's form; the values are bound at execution."""
    return (
        is_sqlite,
        query.sort,
        query.state if query.state in (rules.ACTIVE, rules.EXPIRED, "any") else "other",
        bool(query.terms),
        bool(query.location_terms),
        query.category is not None,
        query.min_price is not None,
        query.max_price is not None,
        query.seller is not None,
        query.after is not None,
    )


def parameters(query: rules.SearchQuery, now_ms: int, *, is_sqlite: bool) -> dict[str, Any]:
    """The values bound into `build_query`'s statement."""
    out: dict[str, Any] = {"now": now_ms, "state": query.state, "limit": query.limit + 1}
    for name in ("category", "min_price", "max_price", "seller"):
        out[name] = getattr(query, name)
    if query.terms or query.location_terms:
        if is_sqlite:
            out["match"] = rules.fts5_expression(query.terms, query.location_terms, query.category)
        else:
            parts = (rules.tsquery_text(query.terms), rules.tsquery_text(query.location_terms, "D"))
            out["tsquery"] = " & ".join(t for t in parts if t)
    for i, value in enumerate(query.after or ()):
        out[f"after{i}"] = value
    return out


def build_query(query: rules.SearchQuery, *, is_sqlite: bool) -> Select[Any]:
    """The SELECT for one page (limit + 1 rows, to know whether another page follows), with
    bound parameters (see `parameters`): statements of one shape are built once."""
    conds = _filters(query, is_sqlite=is_sqlite)
    row_id = _ROWID if is_sqlite else listings.c.listing_id
    source: Any = listings
    score: ColumnElement[Any] | None = None
    if query.terms or query.location_terms:
        if is_sqlite:
            source = _fts.join(listings, _ROWID == _FTS_ROWID)
            conds.append(_FTS.op("MATCH")(bindparam("match", type_=String)))
            score = -func.bm25(_FTS, *(literal_column(repr(w)) for w in BM25_WEIGHTS))
        else:
            tsquery = func.to_tsquery(
                literal_column(f"'{PG_TEXT_CONFIG}'::regconfig"), bindparam("tsquery", type_=String)
            )
            vector: ColumnElement[Any] = literal_column("listings.search_vector")
            conds.append(vector.op("@@")(tsquery))
            score = func.ts_rank(vector, tsquery)
    keys: list[Any] = [row_id.label("rid"), listings.c.listing_id]
    if query.sort == "relevance":
        assert score is not None  # relevance without words is `newest` (see parse_search)
        keys.append(score.label("score"))
    elif query.sort == "reputation":
        rep = (
            select(deals.c.seller, func.count().label("n"))
            .where(deals.c.state.in_(REPUTATION_DEAL_STATES))
            .group_by(deals.c.seller)
            .subquery("rep")
        )
        source = source.outerjoin(rep, rep.c.seller == listings.c.seller)
        keys += [func.coalesce(rep.c.n, 0).label("rep"), listings.c.created_ts]
    elif query.sort == "newest":
        keys.append(listings.c.created_ts)
    else:
        keys.append(listings.c.price)
    matching = select(*keys).select_from(source).where(*conds)
    if query.sort in ("relevance", "reputation"):
        # computed keys: filter and order on the subquery's columns
        computed = matching.subquery("matching")
        page = _page(select(computed), query, computed.c)
    else:
        page = _page(matching, query, listings.c)
    hits = page.subquery("hits")
    extra = [hits.c[name] for name in ("score", "rep") if name in hits.c]
    full = select(listings, *extra).select_from(hits.join(listings, row_id == hits.c.rid))
    return full.order_by(*_order(query.sort, hits.c))


def statement(svc: Services, query: rules.SearchQuery) -> Select[Any]:
    """`build_query`, built once per shape and kept in the services' cache."""
    cache: dict[tuple[Any, ...], Select[Any]] = svc.cache.setdefault("listing_search", {})
    shape = _shape(query, svc.db.is_sqlite)
    found = cache.get(shape)
    if found is None:
        found = cache[shape] = build_query(query, is_sqlite=svc.db.is_sqlite)
    return found


def _order(sort: str, c: Any) -> list[Any]:
    if sort == "relevance":
        return [c.score.desc(), c.listing_id.asc()]
    if sort == "reputation":
        return [c.rep.desc(), c.created_ts.desc(), c.listing_id.desc()]
    if sort == "newest":
        return [c.created_ts.desc(), c.listing_id.desc()]
    if sort == "price_asc":
        return [c.price.asc(), c.listing_id.asc()]
    return [c.price.desc(), c.listing_id.desc()]


def _after(i: int) -> BindParameter[Any]:
    """The cursor's key, part i (bound by `parameters`)."""
    return bindparam(f"after{i}")


def _page(stmt: Select[Any], query: rules.SearchQuery, c: Any) -> Select[Any]:
    """Keyset: the rows after the cursor's key, in order, one more than the page."""
    lid = c.listing_id
    sort = query.sort
    a0, a1, a2 = _after(0), _after(1), _after(2)
    if query.after is not None:
        if sort == "relevance":
            stmt = stmt.where(or_(c.score < a0, and_(c.score == a0, lid > a1)))
        elif sort == "reputation":
            stmt = stmt.where(
                or_(c.rep < a0, and_(c.rep == a0, c.created_ts <= a1, or_(c.created_ts < a1, lid < a2)))
            )
        elif sort == "newest":
            stmt = stmt.where(c.created_ts <= a0, or_(c.created_ts < a0, lid < a1))
        elif sort == "price_asc":
            stmt = stmt.where(c.price >= a0, or_(c.price > a0, lid > a1))
        else:
            stmt = stmt.where(c.price <= a0, or_(c.price < a0, lid < a1))
    return stmt.order_by(*_order(sort, c)).limit(bindparam("limit", type_=Integer))


def _key(sort: str, row: Any) -> tuple[Any, ...]:
    if sort == "relevance":
        return (float(row.score), row.listing_id)
    if sort == "reputation":
        return (int(row.rep), row.created_ts, row.listing_id)
    if sort == "newest":
        return (row.created_ts, row.listing_id)
    return (row.price, row.listing_id)


# -- the two searches that do not fit one statement well on SQLite ---------------------------------

_SELLER_DEALS = (
    select(deals.c.seller, func.count().label("n"))
    .where(deals.c.state.in_(REPUTATION_DEAL_STATES))
    .group_by(deals.c.seller)
    .order_by(func.count().desc(), deals.c.seller)
)
#: Sellers per statement when walking the reputation levels.
REPUTATION_CHUNK = 32
#: Relevance: how many best-ranked matches to try first (times the page), and the most ever tried
#: before reading every match.
RELEVANCE_FIRST = 2
RELEVANCE_MAX_CANDIDATES = 4000


def _reputation_chunk_query(query: rules.SearchQuery, *, is_sqlite: bool) -> Select[Any]:
    """Listings of a chunk of sellers who have completed deals, best reputation first."""
    sellers: BindParameter[Any] = bindparam("sellers", expanding=True)
    rep = (
        select(deals.c.seller, func.count().label("n"))
        .where(deals.c.state.in_(REPUTATION_DEAL_STATES), deals.c.seller.in_(sellers))
        .group_by(deals.c.seller)
        .subquery("rep")
    )
    conds = _filters(query, is_sqlite=is_sqlite, by_seller=True)
    conds.append(listings.c.seller.in_(sellers))
    stmt = select(listings, rep.c.n.label("rep")).select_from(
        listings.join(rep, rep.c.seller == listings.c.seller)
    )
    stmt = stmt.where(*conds)
    if query.after is not None:
        a0, a1, a2 = _after(0), _after(1), _after(2)
        c = listings.c
        stmt = stmt.where(
            or_(
                rep.c.n < a0,
                and_(rep.c.n == a0, c.created_ts <= a1, or_(c.created_ts < a1, c.listing_id < a2)),
            )
        )
    order = [rep.c.n.desc(), listings.c.created_ts.desc(), listings.c.listing_id.desc()]
    return stmt.order_by(*order).limit(bindparam("limit", type_=Integer))


def _reputation_tail_query(query: rules.SearchQuery, *, is_sqlite: bool) -> Select[Any]:
    """Listings of sellers without completed deals, newest first."""
    newest = rules.SearchQuery(**{**query.__dict__, "sort": "newest"})
    conds = _filters(newest, is_sqlite=is_sqlite)
    conds.append(
        listings.c.seller.not_in(select(deals.c.seller).where(deals.c.state.in_(REPUTATION_DEAL_STATES)))
    )
    stmt = select(listings, literal_column("0", Integer).label("rep")).where(*conds)
    if query.after is not None:
        a1, a2 = _after(1), _after(2)
        c = listings.c
        stmt = stmt.where(c.created_ts <= a1, or_(c.created_ts < a1, c.listing_id < a2))
    order = [listings.c.created_ts.desc(), listings.c.listing_id.desc()]
    return stmt.order_by(*order).limit(bindparam("limit", type_=Integer))


async def _by_reputation(
    svc: Services, conn: Any, query: rules.SearchQuery, values: dict[str, Any]
) -> list[Any]:
    """Reputation order without words, seller by seller: the sellers with completed deals from
    the best down (a few statements, each reading only those sellers' listings), then everyone
    else newest first. Reading every matching listing to sort it would cost far more."""
    cache: dict[tuple[Any, ...], Select[Any]] = svc.cache.setdefault("listing_search", {})
    shape = _shape(query, svc.db.is_sqlite)
    need = query.limit + 1
    after = query.after
    out: list[Any] = []
    if after is None or after[0] > 0:
        scores = [(str(r.seller), int(r.n)) for r in await conn.execute(_SELLER_DEALS)]
        if after is not None:
            scores = [(seller, n) for seller, n in scores if n <= after[0]]
        chunk_query = cache.get(("chunk", *shape))
        if chunk_query is None:
            chunk_query = cache[("chunk", *shape)] = _reputation_chunk_query(
                query, is_sqlite=svc.db.is_sqlite
            )
        start = 0
        while start < len(scores) and len(out) < need:
            end = min(len(scores), start + REPUTATION_CHUNK)
            while end < len(scores) and scores[end][1] == scores[end - 1][1]:
                end += 1  # a level (sellers with the same count) is never split
            sellers = [seller for seller, _ in scores[start:end]]
            chunk_values = {**values, "sellers": sellers, "limit": need - len(out)}
            out += (await conn.execute(chunk_query, chunk_values)).all()
            start = end
    if len(out) < need:
        tail_query = cache.get(("tail", *shape))
        if tail_query is None:
            tail_query = cache[("tail", *shape)] = _reputation_tail_query(query, is_sqlite=svc.db.is_sqlite)
        tail_values = {**values, "limit": need - len(out)}
        if after is not None and after[0] > 0:
            tail_values.update(after1=2**62, after2="")  # the cursor was above: the tail starts at its top
        out += (await conn.execute(tail_query, tail_values)).all()
    return out


_RELEVANCE_CANDIDATES = (
    select(
        _FTS_ROWID.label("rid"), func.bm25(_FTS, *(literal_column(repr(w)) for w in BM25_WEIGHTS)).label("b")
    )
    .select_from(_fts)
    .where(_FTS.op("MATCH")(bindparam("match", type_=String)))
    .order_by(literal_column("b"))
    .limit(bindparam("n", type_=Integer))
)


def _relevance_rows_query(query: rules.SearchQuery) -> Select[Any]:
    conds = _filters(query, is_sqlite=True)
    conds.append(_ROWID.in_(bindparam("rids", expanding=True)))
    return select(listings, _ROWID.label("rid")).where(*conds)


async def _by_relevance_sqlite(
    svc: Services, conn: Any, query: rules.SearchQuery, values: dict[str, Any]
) -> list[Any] | None:
    """The first page by relevance, from the best-ranked matches only: rank them in the full-text
    index alone, read just those rows, and check that nothing outside them could rank in the page
    (the page's last row must rank above every match left out). None: read every match instead."""
    cache: dict[tuple[Any, ...], Select[Any]] = svc.cache.setdefault("listing_search", {})
    shape = ("relevance-rows", *_shape(query, True))
    rows_query = cache.get(shape)
    if rows_query is None:
        rows_query = cache[shape] = _relevance_rows_query(query)
    need = query.limit + 1
    n = need * RELEVANCE_FIRST
    while n <= RELEVANCE_MAX_CANDIDATES:
        candidates = (await conn.execute(_RELEVANCE_CANDIDATES, {"match": values["match"], "n": n})).all()
        score = {int(c.rid): -float(c.b) for c in candidates}
        rows = (await conn.execute(rows_query, {**values, "rids": list(score)})).all()
        found = sorted(
            (_Scored(row, score[int(row.rid)]) for row in rows), key=lambda r: (-r.score, r.listing_id)
        )
        if len(candidates) < n:
            return found[:need]  # every match was a candidate
        if len(found) >= need and found[need - 1].score > -float(candidates[-1].b):
            return found[:need]
        n *= 4
    return None


class _Scored:
    """A listings row with its relevance score, read like the single statement's rows."""

    __slots__ = ("_row", "score")

    def __init__(self, row: Any, score: float) -> None:
        self._row = row
        self.score = score

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)


async def search(
    svc: Services,
    *,
    q: str | None = None,
    category: str | None = None,
    min_price: int | None = None,
    max_price: int | None = None,
    location: str | None = None,
    seller: str | None = None,
    state: str | None = "active",
    sort: str | None = "relevance",
    cursor: str | None = None,
    limit: int | None = rules.DEFAULT_LIMIT,
) -> dict[str, Any]:
    """One page of listings: `{listings: [...], next_cursor}` (next_cursor null on the last page)."""
    query = rules.parse_search(
        q=q,
        category=category,
        min_price=min_price,
        max_price=max_price,
        location=location,
        seller=seller,
        state=state,
        sort=sort,
        cursor=cursor,
        limit=limit,
        categories=listing_rules(svc.settings).categories,
        max_limit=svc.settings.market_search_max_limit,
    )
    now = svc.clock.now_ms()
    values = parameters(query, now, is_sqlite=svc.db.is_sqlite)
    words = bool(query.terms or query.location_terms)
    async with svc.db.read() as conn:
        rows: list[Any] | None = None
        if query.sort == "reputation" and not words:
            rows = await _by_reputation(svc, conn, query, values)
        elif query.sort == "relevance" and svc.db.is_sqlite and query.after is None:
            rows = await _by_relevance_sqlite(svc, conn, query, values)
        if rows is None:
            rows = list((await conn.execute(statement(svc, query), values)).all())
    page = rows[: query.limit]
    next_cursor = None
    if len(rows) > query.limit:
        next_cursor = rules.encode_cursor(query.sort, query.digest, _key(query.sort, page[-1]))
    out = []
    for row in page:
        item = listing_dict(row, now)
        if query.sort == "reputation":
            item["seller_completed_deals"] = int(row.rep)
        out.append(item)
    return {"listings": out, "next_cursor": next_cursor, "sort": query.sort}
