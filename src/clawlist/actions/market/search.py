"""Listing search: one interface over SQLite FTS5 and PostgreSQL full-text search.

Words (`q`) and the place (`location`) go to the full-text index (migration 0006): on SQLite the
FTS5 table `listings_fts` over the listings rows (porter stemming; relevance = bm25 weighting
title 10, tags 5, place 2, description 1), on PostgreSQL the generated `listings.search_vector`
with its GIN index (english stemming; relevance = ts_rank with weights title A, tags B,
description C, place D). Every other filter reads the `listings` row. Pages are keyset-paginated
on the sort key plus the listing id, so a page never repeats or skips a listing whose sort key
does not change between requests.

A search runs in two steps inside one statement: the matching rows are ordered by their sort key
alone (a row id and a few numbers), and only the page's rows are then read in full. On SQLite two
shapes avoid reading every match of common words: relevance's first page ranks the matches in the
FTS5 index alone and reads only the best (`relevance_page_query`), and a word search sorted by
date, or by price within a category, walks the listings index in that order checking each row
against the matches once they are many (`walkable`, `WALK_MIN_MATCHES`). Both return exactly what
the plain statement would (tests/integration/test_listings_search_plans.py compares them).

`sort=reputation` orders by the seller's reputation score, the one profiles show
(`core.reputation.score`): unique counterparties who rated the seller +1 minus unique
counterparties who rated it -1, where a resolved dispute that finds a party at fault counts as the
other party's -1 about it on that deal (replacing the rating it left there); then newest first.
`SELLER_SCORES` computes every rated agent's score in SQL (both databases). It reads every
feedback row, so its result is kept per process (`seller_scores`) and reused while the database
says nothing it depends on changed: feedback rows are only ever inserted and a dispute is resolved
once, so the number of feedback rows and the number (and latest time) of resolved disputes,
read in the search's own transaction, change whenever a score can. The statements then take the
scores as a JSON object parameter (`{"@seller:server": score, ...}`, sellers whose score is not 0)
and sort and paginate in SQL, so a page's cursor means the same on every page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    distinct,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
    true,
    union_all,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.selectable import CTE

from clawlist.actions.market.listings import listing_dict, listing_rules
from clawlist.actions.services import Services
from clawlist.core import listings as rules
from clawlist.core import reputation as rep
from clawlist.storage.tables import deals, disputes, feedback, listings

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
        out.append(col(listings.c.category, by_seller or query.sort == "newest") == bindparam("category"))
    if query.min_price is not None:
        out.append(col(listings.c.price, by_seller) >= bindparam("min_price"))
    if query.max_price is not None:
        out.append(col(listings.c.price, by_seller) <= bindparam("max_price"))
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
    if query.sort == "reputation":
        out["scores"] = "{}"  # `search` binds the sellers' scores (`seller_scores`)
    return out


def build_query(query: rules.SearchQuery, *, is_sqlite: bool, walk: bool = False) -> Select[Any]:
    """The SELECT for one page (limit + 1 rows, to know whether another page follows), with
    bound parameters (see `parameters`): statements of one shape are built once.

    `walk` (SQLite, `walkable` searches): the rows come from the listings index that gives the
    order, as without words, each checked against the full-text matches (a list built once)."""
    row_id = _ROWID if is_sqlite else listings.c.listing_id
    source: Any = listings
    score: ColumnElement[Any] | None = None
    if walk:
        assert is_sqlite and walkable(query)
        wordless = rules.SearchQuery(**{**query.__dict__, "terms": (), "location_terms": ()})
        conds = _filters(wordless, is_sqlite=True)
        matches = (
            select(_FTS_ROWID).select_from(_fts).where(_FTS.op("MATCH")(bindparam("match", type_=String)))
        )
        conds.append(_ROWID.in_(matches))
    else:
        conds = _filters(query, is_sqlite=is_sqlite)
    if (query.terms or query.location_terms) and not walk:
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
        # every match is looked up in the scores (materialized once, with an index on SQLite)
        scores = _scores_table(is_sqlite=is_sqlite, materialized=True)
        source = source.outerjoin(scores, scores.c.seller == listings.c.seller)
        keys += [func.coalesce(scores.c.n, 0).label("rep"), listings.c.created_ts]
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


def _cached(svc: Services, key: tuple[Any, ...], build: Any) -> Select[Any]:
    cache: dict[tuple[Any, ...], Select[Any]] = svc.cache.setdefault("listing_search", {})
    found = cache.get(key)
    if found is None:
        found = cache[key] = build()
    return found


def statement(svc: Services, query: rules.SearchQuery, *, walk: bool = False) -> Select[Any]:
    """`build_query`, built once per shape and kept in the services' cache."""
    is_sqlite = svc.db.is_sqlite
    return _cached(
        svc, (walk, *_shape(query, is_sqlite)), lambda: build_query(query, is_sqlite=is_sqlite, walk=walk)
    )


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


def _after(i: int, type_: Any = None) -> BindParameter[Any]:
    """The cursor's key, part i (bound by `parameters`)."""
    return bindparam(f"after{i}", type_=type_)


def _reputation_after() -> tuple[BindParameter[Any], ...]:
    """The reputation cursor's key: (score, created_ts, listing_id)."""
    return _after(0, Integer), _after(1, BigInteger), _after(2, String)


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


# -- reputation ----------------------------------------------------------------------------------


def _fault_parties() -> tuple[ColumnElement[Any], ColumnElement[Any], ColumnElement[bool]]:
    """(the party who was right, the party at fault, the condition) of a resolved dispute that
    blames someone, over `disputes` joined with its deal (`core.reputation.at_fault`)."""
    refund = disputes.c.outcome == rep.REFUND
    right = case((refund, deals.c.buyer), else_=deals.c.seller)
    wrong = case((refund, deals.c.seller), else_=deals.c.buyer)
    blames = and_(disputes.c.state == "resolved", disputes.c.outcome.in_((rep.REFUND, rep.RELEASE)))
    return right, wrong, blames


def _seller_scores_query() -> Select[Any]:
    right, wrong, blames = _fault_parties()
    resolved = disputes.join(deals, and_(deals.c.deal_id == disputes.c.deal_id, blames))
    # feedback, less the ratings a finding of fault replaces (the right party's about the wrong one)
    replaced = (
        select(disputes.c.deal_id, right.label("rater"), wrong.label("ratee"))
        .select_from(resolved)
        .subquery("replaced")
    )
    r = replaced.c
    same = and_(r.deal_id == feedback.c.deal_id, r.rater == feedback.c.rater, r.ratee == feedback.c.ratee)
    given = (
        select(feedback.c.rater, feedback.c.ratee, feedback.c.rating)
        .select_from(feedback.outerjoin(replaced, same))
        .where(r.deal_id.is_(None))
    )
    faults = select(
        right.label("rater"), wrong.label("ratee"), literal_column(str(rep.NEGATIVE), Integer).label("rating")
    ).select_from(resolved)
    counted = union_all(given, faults).subquery("counted")
    c = counted.c
    other = c.rater != c.ratee

    def raters(condition: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.count(distinct(case((and_(condition, other), c.rater))))

    score = raters(c.rating > 0) - raters(c.rating < 0)
    return select(c.ratee.label("seller"), score.label("n")).group_by(c.ratee)


#: Every rated agent's reputation score: `(seller, n)` (`core.reputation.score`, disputes applied).
SELLER_SCORES = _seller_scores_query()
#: What the scores are computed from changes whenever one of these figures does (see the module doc).
SCORES_FINGERPRINT = select(
    select(func.count()).select_from(feedback).scalar_subquery(),
    select(func.count()).where(disputes.c.state == "resolved").scalar_subquery(),
    select(func.max(disputes.c.resolved_ts)).where(disputes.c.state == "resolved").scalar_subquery(),
)
SCORES_CACHE_KEY = "listing_search.seller_scores"


@dataclass(frozen=True, slots=True)
class SellerScores:
    """Every seller whose score is not 0, best first (ties by user id), and the same as JSON."""

    fingerprint: tuple[Any, ...]
    ranked: tuple[tuple[str, int], ...]
    as_json: str


async def seller_scores(svc: Services, conn: Any) -> SellerScores:
    """The sellers' reputation scores as of the caller's transaction: computed in SQL
    (`SELLER_SCORES`), kept per process while `SCORES_FINGERPRINT` reads the same."""
    fingerprint = tuple((await conn.execute(SCORES_FINGERPRINT)).one())
    found = svc.cache.get(SCORES_CACHE_KEY)
    if isinstance(found, SellerScores) and found.fingerprint == fingerprint:
        return found
    rows = (await conn.execute(SELLER_SCORES)).all()
    ranked = sorted(((str(r.seller), int(r.n)) for r in rows if int(r.n) != 0), key=lambda x: (-x[1], x[0]))
    found = SellerScores(fingerprint, tuple(ranked), _scores_json(ranked))
    svc.cache[SCORES_CACHE_KEY] = found
    return found


def _scores_json(scores: list[tuple[str, int]] | tuple[tuple[str, int], ...]) -> str:
    return orjson.dumps(dict(scores)).decode()


def _scores_table(*, is_sqlite: bool, materialized: bool = False) -> Any:
    """The `scores` parameter (a JSON object, seller -> score) as a table `(seller, n)`:
    SQLite's json_each, PostgreSQL's json_each_text. Materialized: read once per statement (on
    SQLite with an automatic index on `seller`), for a statement that looks sellers up in it."""
    param = bindparam("scores", type_=String)
    if is_sqlite:
        each = func.json_each(param).table_valued("key", "value", name="each")
        rows = select(each.c.key.label("seller"), each.c.value.label("n"))
    else:
        each = func.json_each_text(sql_cast(param, JSON)).table_valued("key", "value", name="each")
        rows = select(each.c.key.label("seller"), sql_cast(each.c.value, Integer).label("n"))
    if materialized:
        scores: CTE = rows.cte("scores").prefix_with("MATERIALIZED")
        return scores
    return rows.subquery("scores")


#: Reputation without words: sellers in the first statement (a level of equal scores is never
#: split), then four times as many in each next one.
REPUTATION_FIRST_CHUNK = 4
REPUTATION_CHUNK_GROWTH = 4


def reputation_chunk_query(query: rules.SearchQuery, *, is_sqlite: bool) -> Select[Any]:
    """Listings of the sellers in `scores` (a chunk of rated sellers), best score first, each
    seller's listings read through ix_listings_seller_state: on SQLite the scores drive a join;
    on PostgreSQL (whose planner guesses 100 rows for any JSON and would rather hash-join every
    listing of the category) a LATERAL subquery reads each seller's first rows by the index."""
    scores = _scores_table(is_sqlite=is_sqlite)
    limit = bindparam("limit", type_=Integer)
    conds = _filters(query, is_sqlite=is_sqlite, by_seller=True)
    c = listings.c
    conds.append(c.seller == scores.c.seller)
    if query.after is not None:
        a0, a1, a2 = _reputation_after()
        conds.append(
            or_(
                scores.c.n < a0,
                and_(scores.c.n == a0, c.created_ts <= a1, or_(c.created_ts < a1, c.listing_id < a2)),
            )
        )
    if is_sqlite:
        stmt = (
            select(listings, scores.c.n.label("rep")).select_from(scores).join(listings, true()).where(*conds)
        )
        order = [scores.c.n.desc(), c.created_ts.desc(), c.listing_id.desc()]
        return stmt.order_by(*order).limit(limit)
    per_seller = (
        select(listings)
        .where(*conds)
        .order_by(c.created_ts.desc(), c.listing_id.desc())
        .limit(limit)
        .lateral("per_seller")
    )
    p = per_seller.c
    return (
        select(per_seller, scores.c.n.label("rep"))
        .select_from(scores.join(per_seller, true()))
        .order_by(scores.c.n.desc(), p.created_ts.desc(), p.listing_id.desc())
        .limit(limit)
    )


def reputation_tail_query(query: rules.SearchQuery, *, is_sqlite: bool) -> Select[Any]:
    """Listings of sellers whose score is 0 (not in `scores`), newest first."""
    newest = rules.SearchQuery(**{**query.__dict__, "sort": "newest"})
    conds = _filters(newest, is_sqlite=is_sqlite)
    scores = _scores_table(is_sqlite=is_sqlite)
    conds.append(listings.c.seller.not_in(select(scores.c.seller)))
    stmt = select(listings, literal_column("0", Integer).label("rep")).where(*conds)
    if query.after is not None:
        _, a1, a2 = _reputation_after()
        c = listings.c
        stmt = stmt.where(c.created_ts <= a1, or_(c.created_ts < a1, c.listing_id < a2))
    order = [listings.c.created_ts.desc(), listings.c.listing_id.desc()]
    return stmt.order_by(*order).limit(bindparam("limit", type_=Integer))


async def _by_reputation(
    svc: Services, conn: Any, query: rules.SearchQuery, values: dict[str, Any], scores: SellerScores
) -> list[Any]:
    """Reputation order without words, seller by seller: the sellers with a positive score from
    the best down (a few statements, each reading only those sellers' listings), then everyone
    whose score is 0 newest first, then the negative scores. Reading every matching listing to
    sort it would cost far more."""
    is_sqlite = svc.db.is_sqlite
    shape = _shape(query, is_sqlite)
    need = query.limit + 1
    top = None if query.after is None else int(query.after[0])
    out: list[Any] = []

    async def walk(ranked: list[tuple[str, int]]) -> None:
        chunk_query = _cached(
            svc, ("chunk", *shape), lambda: reputation_chunk_query(query, is_sqlite=is_sqlite)
        )
        start, size = 0, REPUTATION_FIRST_CHUNK
        while start < len(ranked) and len(out) < need:
            end = min(len(ranked), start + size)
            while end < len(ranked) and ranked[end][1] == ranked[end - 1][1]:
                end += 1  # a level (sellers with the same score) is never split
            chunk_values = {**values, "scores": _scores_json(ranked[start:end]), "limit": need - len(out)}
            out.extend((await conn.execute(chunk_query, chunk_values)).all())
            start, size = end, size * REPUTATION_CHUNK_GROWTH

    def below(n: int) -> bool:
        return top is None or n <= top

    await walk([(seller, n) for seller, n in scores.ranked if n > 0 and below(n)])
    if len(out) < need and (top is None or top >= 0):
        tail_query = _cached(svc, ("tail", *shape), lambda: reputation_tail_query(query, is_sqlite=is_sqlite))
        tail_values = {**values, "scores": scores.as_json, "limit": need - len(out)}
        if top is not None and top > 0:
            tail_values.update(after1=2**62, after2="")  # the cursor was above: the tail starts at its top
        out.extend((await conn.execute(tail_query, tail_values)).all())
    if len(out) < need:
        await walk([(seller, n) for seller, n in scores.ranked if n < 0 and below(n)])
    return out


# -- relevance on SQLite: rank in the full-text index first -----------------------------------------

#: Relevance: how many best-ranked matches to try first (times the page; more when a price range,
#: which the full-text index does not hold, may leave many out), and the most ever tried before
#: reading every match.
RELEVANCE_FIRST = 4
RELEVANCE_FIRST_PRICED = 16
RELEVANCE_MAX_CANDIDATES = 4000


def relevance_page_query(query: rules.SearchQuery) -> Select[Any]:
    """SQLite, relevance's first page from the best-ranked matches only, in one statement: rank
    every match in the FTS5 index alone (bm25, no listing row read) and keep the best `n`, read
    those rows and filter them, and return the page with how many candidates there were and the
    worst candidate's rank (`n_cand`, `last_b`; one row with an empty page when none passed)."""
    bm25 = func.bm25(_FTS, *(literal_column(repr(w)) for w in BM25_WEIGHTS))
    cand = (
        select(_FTS_ROWID.label("rid"), bm25.label("b"))
        .select_from(_fts)
        .where(_FTS.op("MATCH")(bindparam("match", type_=String)))
        .order_by(literal_column("b"))
        .limit(bindparam("n", type_=Integer))
        .cte("cand")
        .prefix_with("MATERIALIZED")
    )
    meta = select(func.count().label("n_cand"), func.max(cand.c.b).label("last_b")).select_from(cand)
    meta_sq = meta.subquery("meta")
    page = (
        select(listings, (-cand.c.b).label("score"), cand.c.b)
        .select_from(cand.join(listings, cand.c.rid == _ROWID))
        .where(*_filters(query, is_sqlite=True))
        .order_by(cand.c.b, listings.c.listing_id)
        .limit(bindparam("limit", type_=Integer))
        .subquery("page")
    )
    return (
        select(meta_sq.c.n_cand, meta_sq.c.last_b, page)
        .select_from(meta_sq.outerjoin(page, literal_column("1") == literal_column("1")))
        .order_by(page.c.b, page.c.listing_id)
    )


async def _by_relevance_sqlite(
    svc: Services, conn: Any, query: rules.SearchQuery, values: dict[str, Any]
) -> list[Any] | None:
    """The first page by relevance from the best-ranked matches (`relevance_page_query`), checking
    that nothing left out could rank in the page: the page's last row must rank above every match
    left out. Else four times as many candidates; None: read every match instead."""
    shape = ("relevance-page", *_shape(query, True))
    page_query = _cached(svc, shape, lambda: relevance_page_query(query))
    need = query.limit + 1
    priced = query.min_price is not None or query.max_price is not None
    n = need * (RELEVANCE_FIRST_PRICED if priced else RELEVANCE_FIRST)
    while n <= RELEVANCE_MAX_CANDIDATES:
        rows = (await conn.execute(page_query, {**values, "n": n, "limit": need})).all()
        found = [row for row in rows if row.listing_id is not None]
        if rows[0].n_cand < n:
            return found  # every match was a candidate
        if len(found) >= need and found[need - 1].score > -float(rows[0].last_b):
            return found
        n *= 4
    return None


# -- word searches by date or price on SQLite: walk the listings index -------------------------------

#: A word search sorted by date or price walks the listings index in order (checking each row
#: against the full-text matches) instead of reading and sorting every match, when the words
#: match at least this many listings: then a page is found after a short walk.
WALK_MIN_MATCHES = 500
_MATCHES_UP_TO = select(func.count()).select_from(
    select(literal_column("1"))
    .select_from(_fts)
    .where(_FTS.op("MATCH")(bindparam("match", type_=String)))
    .limit(bindparam("cap", type_=Integer))
    .subquery("some")
)


def walkable(query: rules.SearchQuery) -> bool:
    """Whether a listings index gives this word search's order under its filters: newest through
    (state, created_ts), price through (state, category, price); one state, no seller (a seller's
    listings are few: reading them by seller is better)."""
    if not (query.terms or query.location_terms) or query.seller is not None:
        return False
    if query.state in ("any", rules.EXPIRED):
        return False
    if query.sort == "newest":
        return True
    return query.sort in ("price_asc", "price_desc") and query.category is not None


async def _many_matches(conn: Any, values: dict[str, Any]) -> bool:
    found = (await conn.execute(_MATCHES_UP_TO, {"match": values["match"], "cap": WALK_MIN_MATCHES})).scalar()
    return int(found or 0) >= WALK_MIN_MATCHES


#: PostgreSQL: plan every search for its own values. The driver prepares each statement once per
#: connection, and after five runs PostgreSQL may switch to one generic plan for all values; the
#: best plan of a search depends on them (how selective a price range or a word is), and a
#: generic one read every listing of a category to sort it (23 ms instead of 2 at 100,000
#: listings). Planning costs well under a millisecond; LOCAL ends with the read transaction.
_CUSTOM_PLANS = text("SET LOCAL plan_cache_mode = force_custom_plan")


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
        if not svc.db.is_sqlite:
            await conn.execute(_CUSTOM_PLANS)
        rows: list[Any] | None = None
        if query.sort == "reputation":
            scores = await seller_scores(svc, conn)
            values["scores"] = scores.as_json
            if not words:
                rows = await _by_reputation(svc, conn, query, values, scores)
        elif query.sort == "relevance" and svc.db.is_sqlite and query.after is None:
            rows = await _by_relevance_sqlite(svc, conn, query, values)
        if rows is None:
            walk = svc.db.is_sqlite and walkable(query) and await _many_matches(conn, values)
            rows = list((await conn.execute(statement(svc, query, walk=walk), values)).all())
    page = rows[: query.limit]
    next_cursor = None
    if len(rows) > query.limit:
        next_cursor = rules.encode_cursor(query.sort, query.digest, _key(query.sort, page[-1]))
    out = []
    for row in page:
        item = listing_dict(row, now)
        if query.sort == "reputation":
            item["seller_score"] = int(row.rep)
        out.append(item)
    return {"listings": out, "next_cursor": next_cursor, "sort": query.sort}
