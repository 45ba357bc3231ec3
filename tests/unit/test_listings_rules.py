"""The listing rules in core: every field's reasons, prohibited items, the body, search parameters,
the full-text query built from user text, and the cursor."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from clawlist.core import listings as rules
from clawlist.core.errors import ClawlistError

NOW = 1_700_000_000_000
DAY = rules.DAY_MS
RULES = rules.ListingRules(
    max_price=1_000_000,
    max_quantity=100,
    default_ttl_days=30,
    max_ttl_days=365,
    categories=("electronics", "furniture", "services", "skills"),
    prohibited_categories=("weapons", "drugs"),
    prohibited_keywords=("ransomware", "stolen credit card", "counterfeit"),
)
GOOD: dict[str, Any] = {"title": "Desk lamp", "price": 1250, "category": "furniture"}


def check(content: dict[str, Any], room_category: str | None = None) -> rules.Listing:
    return rules.validate_listing(content, RULES, room_category=room_category, now_ms=NOW)


def refused(content: dict[str, Any], room_category: str | None = None) -> ClawlistError:
    with pytest.raises(ClawlistError) as info:
        check(content, room_category)
    assert info.value.status == 400
    return info.value


def test_a_good_listing_is_normalised() -> None:
    listing = check(
        {
            **GOOD,
            "title": "  Desk lamp ",
            "category": "Furniture",
            "description": "Brass.\nWorks.",
            "quantity": 3,
            "condition": "like_new",
            "location": "Berlin",
            "country": "de",
            "region": "Berlin",
            "tags": ["brass", "Brass", "lamp"],
            "images": ["mxc://test.local/abc_DEF-1"],
            "expires_at": NOW + 5 * DAY,
        }
    )
    assert listing.title == "Desk lamp" and listing.category == "furniture" and listing.country == "DE"
    assert listing.tags == ("brass", "lamp")  # duplicates (any case) dropped
    assert listing.expires_ts == NOW + 5 * DAY and listing.quantity == 3
    defaults = check(GOOD)
    assert defaults.quantity == 1 and defaults.expires_ts == NOW + 30 * DAY and defaults.description == ""
    assert defaults.tags == () and defaults.images == () and defaults.condition is None


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"title": None}, "title", "is required"),
        ({"title": "   "}, "title", "must not be empty"),
        ({"title": 5}, "title", "must be a string"),
        ({"title": "x" * 201}, "title", "at most 200"),
        ({"title": "two\nlines"}, "title", "line breaks"),
        ({"title": "nul\x00"}, "title", "control characters"),
        ({"description": "d" * 5001}, "description", "at most 5000"),
        ({"description": ["no"]}, "description", "must be a string"),
        ({"price": None}, "price", "is required"),
        ({"price": "12.50"}, "price", "minor units"),
        ({"price": 12.5}, "price", "minor units"),
        ({"price": True}, "price", "minor units"),
        ({"price": 0}, "price", "must be positive"),
        ({"price": -5}, "price", "must be positive"),
        ({"price": 1_000_001}, "price", "over the limit of 10,000.00 credits"),
        ({"quantity": 0}, "quantity", "at least 1"),
        ({"quantity": 101}, "quantity", "over the limit of 100"),
        ({"quantity": "2"}, "quantity", "whole number"),
        ({"condition": "mint"}, "condition", "like_new"),
        ({"location": "l" * 201}, "location", "at most 200"),
        ({"country": "XX"}, "country", "ISO 3166"),
        ({"country": "DEU"}, "country", "ISO 3166"),
        ({"region": "r" * 65}, "region", "at most 64"),
        ({"tags": "a,b"}, "tags", "list of strings"),
        ({"tags": [str(i) for i in range(11)]}, "tags", "at most 10"),
        ({"tags": ["ok", ""]}, "tags[1]", "non-empty"),
        ({"tags": ["t" * 33]}, "tags[0]", "at most 32"),
        ({"images": "mxc://a/b"}, "images", "list of mxc"),
        ({"images": ["https://example.com/x.png"]}, "images[0]", "mxc://"),
        ({"images": ["mxc://a/b"] * 11}, "images", "at most 10"),
        ({"expires_at": NOW - 1}, "expires_at", "in the past"),
        ({"expires_at": NOW + 366 * DAY}, "expires_at", "more than 365 days"),
        ({"expires_at": "tomorrow"}, "expires_at", "milliseconds"),
        ({"category": None}, "category", "required in #market"),
        ({"category": "toys"}, "category", "unknown category 'toys'; one of electronics"),
        ({"category": 7}, "category", "non-empty string"),
    ],
)
def test_each_bad_field_is_named_with_its_reason(change: dict[str, Any], field: str, reason: str) -> None:
    content = {**GOOD, **change}
    content = {k: v for k, v in content.items() if not (k in ("title", "price", "category") and v is None)}
    err = refused(content)
    assert err.errcode == "CL_BAD_LISTING"
    assert err.extra["field"] == field
    assert err.message.startswith(f"{field}: ") and reason in err.message, err.message


def test_category_rooms_default_and_refuse_another_category() -> None:
    assert check({"title": "Chair", "price": 100}, room_category="furniture").category == "furniture"
    assert check({**GOOD, "category": "FURNITURE"}, room_category="furniture").category == "furniture"
    err = refused({**GOOD, "category": "electronics"}, room_category="furniture")
    assert err.extra["field"] == "category" and "#electronics" in err.message


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"category": "Weapons"}, "category:weapons"),
        ({"title": "RANSOMWARE kit"}, "keyword:ransomware"),
        ({"description": "a Stolen   Credit\nCard or two"}, "keyword:stolen credit card"),
        ({"tags": ["cheap", "counterfeit"]}, "keyword:counterfeit"),
    ],
)
def test_prohibited_items_are_refused_naming_the_rule(change: dict[str, Any], rule: str) -> None:
    err = refused({**GOOD, **change})
    assert err.errcode == "CL_PROHIBITED" and err.extra["rule"] == rule
    assert "prohibited" in err.message


def test_keywords_match_whole_words_only() -> None:
    # 'ransomwareless' is not the word 'ransomware'; a prohibited word inside a location is not checked
    check({**GOOD, "description": "ransomwareless backup service", "location": "counterfeit street"})


def test_unknown_fields_are_reported() -> None:
    assert rules.unknown_fields({"title": 1, "prize": 2, "body": 3}) == ["body", "prize"]


def test_readable_body() -> None:
    one = check({**GOOD, "location": "Berlin"})
    assert rules.listing_body(one) == "Selling: Desk lamp — 12.50 credits (furniture, Berlin)"
    many = check({**GOOD, "quantity": 4, "country": "DE"})
    assert rules.listing_body(many) == "Selling: 4 × Desk lamp — 12.50 credits each (furniture, DE)"


def test_effective_state() -> None:
    assert rules.effective_state("active", NOW, NOW) == "expired"
    assert rules.effective_state("active", NOW + 1, NOW) == "active"
    assert rules.effective_state("sold", NOW - 1, NOW) == "sold"


# -- search parameters -----------------------------------------------------------------------------


def parse(**kw: Any) -> rules.SearchQuery:
    return rules.parse_search(categories=RULES.categories, max_limit=50, **kw)


def test_search_defaults_and_effective_sort() -> None:
    query = parse()
    assert query.state == "active" and query.sort == "newest" and query.limit == 20 and query.after is None
    assert parse(q="lamp").sort == "relevance"
    assert parse(q="lamp", sort="price_asc").sort == "price_asc"
    assert parse(limit=1000).limit == 50  # capped by the setting
    assert parse(category="Furniture").category == "furniture"
    assert parse(q="  ").terms == ()


@pytest.mark.parametrize(
    ("kw", "text"),
    [
        ({"q": "!!! ???"}, "no words"),
        ({"q": "x" * 201}, "at most 200"),
        ({"q": "a\x00"}, "without NUL"),
        ({"q": " ".join(["w"] * 17)}, "at most 16"),
        ({"category": "toys"}, "category must be one of"),
        ({"min_price": -1}, "min_price"),
        ({"min_price": 10, "max_price": 5}, "above max_price"),
        ({"seller": "bob"}, "user id"),
        ({"state": "gone"}, "state must be one of"),
        ({"sort": "cheapest"}, "sort must be one of"),
        ({"limit": 0}, "limit"),
        ({"location": "::"}, "location has no words"),
    ],
)
def test_bad_search_parameters(kw: dict[str, Any], text: str) -> None:
    with pytest.raises(ClawlistError) as info:
        parse(**kw)
    assert info.value.status == 400 and text in info.value.message, info.value.message


def test_user_text_is_quoted_never_syntax() -> None:
    terms = rules.words('phone" OR NEAR(a b) * title:x -y ^z', "q")
    assert terms == ("phone", "or", "near", "a", "b", "title", "x", "y", "z")
    expression = rules.fts5_expression(terms[:2], ("berlin",))
    text = "{title tags description location region country}"
    assert expression == f'({text} : ("phone" "or")) AND ({{location region country}} : ("berlin"))'
    assert rules.fts5_expression((), ("new", "york")) == '({location region country} : ("new" "york"))'
    assert (
        rules.fts5_expression(("a",), (), "stolen-goods")
        == f'({text} : ("a")) AND (category : "stolen-goods")'
    )
    assert rules.fts5_expression((), ()) == ""
    assert rules.tsquery_text(("it's", "a\\b")) == "'it''s' & 'a\\\\b'"
    assert rules.tsquery_text(("berlin",), "D") == "'berlin':D"


def test_cursor_round_trip_and_binding() -> None:
    query = parse(q="lamp", category="furniture")
    cursor = rules.encode_cursor(query.sort, query.digest, (1.25, "$abc"))
    again = parse(q="lamp", category="furniture", cursor=cursor)
    assert again.after == (1.25, "$abc")
    for other in ({"q": "lamp"}, {"q": "lamp", "category": "furniture", "sort": "newest"}):
        with pytest.raises(ClawlistError) as info:
            parse(**other, cursor=cursor)
        assert info.value.errcode == "CL_BAD_CURSOR" and "different search" in info.value.message


def _raw(data: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 !",
        "%%%",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        _raw([1, 2]),
        _raw({"v": 2, "s": "newest", "f": "x", "k": [1, "a"]}),
        "x" * 1001,
    ],
)
def test_damaged_cursors_are_400(cursor: str) -> None:
    with pytest.raises(ClawlistError) as info:
        parse(cursor=cursor)
    assert info.value.status == 400 and info.value.errcode == "CL_BAD_CURSOR"


def test_cursor_key_types_are_checked() -> None:
    digest = parse().digest
    for key in ([1, "a", 3], ["1", "a"], [True, "a"], [1, 2], [1, "a" * 256]):
        with pytest.raises(ClawlistError):
            parse(cursor=_raw({"v": 1, "s": "newest", "f": digest, "k": key}))
    assert parse(cursor=_raw({"v": 1, "s": "newest", "f": digest, "k": [5, "$a"]})).after == (5, "$a")
