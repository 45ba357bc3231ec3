"""Listings: the rules a `clawlist.listing` must follow, its readable body, and the parameters of
a listing search (full-text query and cursor). Pure.

`validate_listing` checks the structured fields of a listing (see docs/events.md) against
`ListingRules` (built by the caller from the settings) and returns them normalised, or raises
400 `CL_BAD_LISTING` naming the field and the reason, or 400 `CL_PROHIBITED` naming the rule.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from clawlist.core.errors import ClawlistError, bad_request
from clawlist.core.money import format_credits

LISTING_MSGTYPE = "clawlist.listing"

#: Listing states. `available` counts the units not held by open deals nor sold.
ACTIVE = "active"
RESERVED = "reserved"
SOLD = "sold"
WITHDRAWN = "withdrawn"
EXPIRED = "expired"
STATES = (ACTIVE, RESERVED, SOLD, WITHDRAWN, EXPIRED)

CONDITIONS = ("new", "like_new", "good", "fair", "poor", "not_applicable")

# The shape of the content (docs/events.md); these are schema bounds, not operator settings.
MAX_TITLE = 200
MAX_DESCRIPTION = 5000
MAX_LOCATION = 200
MAX_REGION = 64
MAX_TAGS = 10
MAX_TAG = 32
MAX_IMAGES = 10
MAX_IMAGE_URI = 255
MAX_CATEGORY = 64

#: The fields a listing may carry (besides msgtype, body and Matrix's own keys).
FIELDS = frozenset(
    {
        "title",
        "description",
        "category",
        "price",
        "quantity",
        "condition",
        "location",
        "country",
        "region",
        "tags",
        "images",
        "expires_at",
    }
)

DAY_MS = 86_400_000

_MXC = re.compile(r"^mxc://[A-Za-z0-9.\-:\[\]]+/[A-Za-z0-9_\-]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LINE_BREAKS = re.compile(r"[\r\n\t]")

# ISO 3166-1 alpha-2: the 249 officially assigned codes.
ISO_COUNTRIES = frozenset(
    re.findall(
        "[A-Z]{2}",
        """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
    BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
    EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
    HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
    LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
    NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
    TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """,
    )
)


@dataclass(frozen=True)
class ListingRules:
    """What the operator configured (settings `market_*` and `category_rooms`)."""

    max_price: int
    max_quantity: int
    default_ttl_days: int
    max_ttl_days: int
    categories: tuple[str, ...]
    prohibited_categories: tuple[str, ...] = ()
    prohibited_keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Listing:
    """A validated listing, normalised (category lower-case, country upper-case, text trimmed)."""

    title: str
    description: str
    category: str
    price: int
    quantity: int
    condition: str | None
    location: str | None
    country: str | None
    region: str | None
    tags: tuple[str, ...]
    images: tuple[str, ...]
    expires_ts: int


def bad_listing(field: str, reason: str) -> ClawlistError:
    return ClawlistError(400, "CL_BAD_LISTING", f"{field}: {reason}", field=field)


def prohibited(rule: str, reason: str) -> ClawlistError:
    return ClawlistError(400, "CL_PROHIBITED", reason, rule=rule)


def _text(
    content: Mapping[str, Any], field: str, *, max_len: int, required: bool = False, one_line: bool = True
) -> str | None:
    value = content.get(field)
    if value is None:
        if required:
            raise bad_listing(field, "is required")
        return None
    if not isinstance(value, str):
        raise bad_listing(field, "must be a string")
    if _CONTROL.search(value) or (one_line and _LINE_BREAKS.search(value)):
        raise bad_listing(
            field, "must not contain control characters" + (" or line breaks" if one_line else "")
        )
    value = value.strip()
    if not value:
        if required:
            raise bad_listing(field, "must not be empty")
        return None
    if len(value) > max_len:
        raise bad_listing(field, f"is {len(value)} characters; at most {max_len}")
    return value


def _integer(content: Mapping[str, Any], field: str, default: int | None = None) -> int:
    value = content.get(field, default)
    if value is None:
        raise bad_listing(field, "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        if field == "price":
            raise bad_listing(
                field, "must be a whole number of minor units (100 = 1 credit), e.g. 1250 for 12.50 credits"
            )
        raise bad_listing(field, "must be a whole number")
    return value


def check_category(
    value: object, rules: ListingRules, *, room_category: str | None, field: str = "category"
) -> str:
    """The listing's category: given, or the category room's; one of the configured categories."""
    if value is None:
        if room_category is None:
            raise bad_listing(field, "is required in #market; one of " + ", ".join(rules.categories))
        return room_category
    if not isinstance(value, str) or not value.strip():
        raise bad_listing(field, "must be a non-empty string")
    category = value.strip().lower()
    if category in {c.lower() for c in rules.prohibited_categories}:
        raise prohibited(f"category:{category}", f"the category '{category}' is prohibited on this server")
    if len(category) > MAX_CATEGORY or category not in rules.categories:
        raise bad_listing(
            field,
            f"unknown category '{value.strip()[:MAX_CATEGORY]}'; one of " + ", ".join(rules.categories),
        )
    if room_category is not None and category != room_category:
        raise bad_listing(
            field,
            f"this is the {room_category} room; post a {category} listing in #{category} or #market",
        )
    return category


def _tags(content: Mapping[str, Any]) -> tuple[str, ...]:
    value = content.get("tags", [])
    if value is None:
        return ()
    if not isinstance(value, list):
        raise bad_listing("tags", "must be a list of strings")
    if len(value) > MAX_TAGS:
        raise bad_listing("tags", f"has {len(value)} tags; at most {MAX_TAGS}")
    out: list[str] = []
    seen: set[str] = set()
    for i, tag in enumerate(value):
        if not isinstance(tag, str) or not tag.strip():
            raise bad_listing(f"tags[{i}]", "must be a non-empty string")
        tag = tag.strip()
        if len(tag) > MAX_TAG or _CONTROL.search(tag) or _LINE_BREAKS.search(tag):
            raise bad_listing(f"tags[{i}]", f"must be at most {MAX_TAG} characters on one line")
        if tag.casefold() not in seen:
            seen.add(tag.casefold())
            out.append(tag)
    return tuple(out)


def _images(content: Mapping[str, Any]) -> tuple[str, ...]:
    value = content.get("images", [])
    if value is None:
        return ()
    if not isinstance(value, list):
        raise bad_listing("images", "must be a list of mxc:// URIs")
    if len(value) > MAX_IMAGES:
        raise bad_listing("images", f"has {len(value)} images; at most {MAX_IMAGES}")
    for i, uri in enumerate(value):
        if not isinstance(uri, str) or len(uri) > MAX_IMAGE_URI or not _MXC.match(uri):
            raise bad_listing(f"images[{i}]", "must be an mxc://server/media-id URI (upload the image first)")
    return tuple(value)


def _expiry(content: Mapping[str, Any], rules: ListingRules, now_ms: int) -> int:
    latest = now_ms + rules.max_ttl_days * DAY_MS
    value = content.get("expires_at")
    if value is None:
        return now_ms + rules.default_ttl_days * DAY_MS
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_listing("expires_at", "must be a timestamp in milliseconds since 1970")
    if value <= now_ms:
        raise bad_listing("expires_at", "is in the past")
    if value > latest:
        raise bad_listing("expires_at", f"is more than {rules.max_ttl_days} days away")
    return value


@functools.lru_cache(maxsize=64)
def _keyword_patterns(keywords: tuple[str, ...]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """One pattern per keyword: whole words, any run of spaces between them, any case."""
    out = []
    for keyword in keywords:
        words = keyword.split()
        if not words:
            continue
        body = r"\s+".join(re.escape(w) for w in words)
        out.append((" ".join(words), re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)))
    return tuple(out)


def check_keywords(keywords: Sequence[str], fields: Mapping[str, str | Sequence[str]]) -> None:
    """Refuse (400 CL_PROHIBITED) when a prohibited word or phrase appears in one of the fields."""
    for keyword, pattern in _keyword_patterns(tuple(keywords)):
        for name, text in fields.items():
            texts = [text] if isinstance(text, str) else list(text)
            if any(pattern.search(t) for t in texts):
                raise prohibited(
                    f"keyword:{keyword}", f"'{keyword}' is prohibited on this server (found in {name})"
                )


def validate_listing(
    content: Mapping[str, Any], rules: ListingRules, *, room_category: str | None, now_ms: int
) -> Listing:
    """Check a listing's fields; `room_category` is the category room it is posted in (None: #market)."""
    title = _text(content, "title", max_len=MAX_TITLE, required=True)
    assert title is not None
    description = _text(content, "description", max_len=MAX_DESCRIPTION, one_line=False) or ""
    category = check_category(content.get("category"), rules, room_category=room_category)
    price = _integer(content, "price")
    if price <= 0:
        raise bad_listing("price", "must be positive")
    if price > rules.max_price:
        raise bad_listing("price", f"is over the limit of {format_credits(rules.max_price)}")
    quantity = _integer(content, "quantity", 1)
    if quantity < 1:
        raise bad_listing("quantity", "must be at least 1")
    if quantity > rules.max_quantity:
        raise bad_listing("quantity", f"is over the limit of {rules.max_quantity}")
    condition = content.get("condition")
    if condition is not None and condition not in CONDITIONS:
        raise bad_listing("condition", "must be one of " + ", ".join(CONDITIONS))
    location = _text(content, "location", max_len=MAX_LOCATION)
    country_raw = _text(content, "country", max_len=MAX_REGION)
    country = country_raw.upper() if country_raw else None
    if country is not None and country not in ISO_COUNTRIES:
        raise bad_listing("country", "must be an ISO 3166 alpha-2 country code such as DE or US")
    region = _text(content, "region", max_len=MAX_REGION)
    tags = _tags(content)
    images = _images(content)
    expires_ts = _expiry(content, rules, now_ms)
    check_keywords(
        rules.prohibited_keywords, {"title": title, "description": description, "tags": list(tags)}
    )
    return Listing(
        title=title,
        description=description,
        category=category,
        price=price,
        quantity=quantity,
        condition=condition,
        location=location,
        country=country,
        region=region,
        tags=tags,
        images=images,
        expires_ts=expires_ts,
    )


def unknown_fields(fields: Mapping[str, Any]) -> list[str]:
    """Keys of a listing request that are not listing fields (typos such as 'prize')."""
    return sorted(k for k in fields if k not in FIELDS)


def listing_body(listing: Listing) -> str:
    """The readable line every client shows: 'Selling: Lamp — 12.50 credits (furniture, Berlin)'."""
    what = listing.title if listing.quantity == 1 else f"{listing.quantity} × {listing.title}"
    price = format_credits(listing.price) + ("" if listing.quantity == 1 else " each")
    where = ", ".join(p for p in (listing.category, listing.location or listing.region, listing.country) if p)
    return f"Selling: {what} — {price} ({where})"


def effective_state(state: str, expires_ts: int, now_ms: int) -> str:
    """An active listing past its expiry is expired, whether or not the scheduler has marked it yet."""
    return EXPIRED if state == ACTIVE and expires_ts <= now_ms else state


# -- search ---------------------------------------------------------------------------------------
#
# User text never reaches a full-text query parser as syntax: it is cut into words (`\w+`), and each
# word is quoted, so `"`, `*`, `:`, `(`, `NEAR`, `&`, `!` and friends are plain text. All words must
# match (AND). The cursor is opaque (base64url JSON) and bound to the sort and the filters that made
# it: a cursor from another search, or a damaged one, is refused with 400 `CL_BAD_CURSOR`.

SORTS = ("relevance", "newest", "price_asc", "price_desc", "reputation")
#: `any` disables the state filter.
STATE_FILTERS = (*STATES, "any")
MAX_QUERY_CHARS = 200
MAX_TERMS = 16
MAX_CURSOR_CHARS = 1000
DEFAULT_LIMIT = 20

_WORD = re.compile(r"\w+")
_USER_ID = re.compile(r"^@[^:\s]+:\S+$")

#: The kinds of a cursor's key for each (effective) sort; the listing id breaks ties.
KEY_KINDS: dict[str, tuple[type, ...]] = {
    "relevance": (float, str),
    "newest": (int, str),
    "price_asc": (int, str),
    "price_desc": (int, str),
    "reputation": (int, int, str),
}


@dataclass(frozen=True)
class SearchQuery:
    terms: tuple[str, ...]
    location_terms: tuple[str, ...]
    category: str | None
    min_price: int | None
    max_price: int | None
    seller: str | None
    state: str
    sort: str  # effective: relevance without words is newest
    limit: int
    digest: str  # identifies the filters and sort, to bind cursors to them
    after: tuple[Any, ...] | None = None


def words(value: object, name: str) -> tuple[str, ...]:
    """The words of a free-text parameter (empty if absent). 400 if it has none or too many."""
    if value is None:
        return ()
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    if "\x00" in value or len(value) > MAX_QUERY_CHARS:
        raise bad_request(f"{name} must be at most {MAX_QUERY_CHARS} characters without NUL")
    if not value.strip():
        return ()
    found = tuple(w.lower() for w in _WORD.findall(value))
    if not found:
        raise bad_request(f"{name} has no words to search for (letters or digits)")
    if len(found) > MAX_TERMS:
        raise bad_request(f"{name} has {len(found)} words; at most {MAX_TERMS}")
    return found


def _price(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_request(f"{name} must be a whole number of minor units >= 0 (100 = 1 credit)")
    return value


def parse_search(
    *,
    q: object = None,
    category: object = None,
    min_price: object = None,
    max_price: object = None,
    location: object = None,
    seller: object = None,
    state: object = "active",
    sort: object = "relevance",
    cursor: object = None,
    limit: object = DEFAULT_LIMIT,
    categories: tuple[str, ...],
    max_limit: int,
) -> SearchQuery:
    terms = words(q, "q")
    location_terms = words(location, "location")
    cat: str | None = None
    if category is not None and category != "":
        if not isinstance(category, str) or category.strip().lower() not in categories:
            raise bad_request("category must be one of " + ", ".join(categories))
        cat = category.strip().lower()
    low, high = _price(min_price, "min_price"), _price(max_price, "max_price")
    if low is not None and high is not None and low > high:
        raise bad_request("min_price is above max_price")
    who: str | None = None
    if seller is not None and seller != "":
        if not isinstance(seller, str) or len(seller) > 255 or not _USER_ID.match(seller):
            raise bad_request("seller must be a user id like @name:server")
        who = seller
    state = "active" if state is None else state
    if state not in STATE_FILTERS:
        raise bad_request("state must be one of " + ", ".join(STATE_FILTERS))
    sort = "relevance" if sort is None else sort
    if sort not in SORTS:
        raise bad_request("sort must be one of " + ", ".join(SORTS))
    effective = "newest" if sort == "relevance" and not terms else str(sort)
    limit = DEFAULT_LIMIT if limit is None else limit
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise bad_request("limit must be a whole number >= 1")
    digest = _digest(terms, location_terms, cat, low, high, who, str(state), effective)
    query = SearchQuery(
        terms=terms,
        location_terms=location_terms,
        category=cat,
        min_price=low,
        max_price=high,
        seller=who,
        state=str(state),
        sort=effective,
        limit=min(limit, max_limit),
        digest=digest,
    )
    if cursor is None or cursor == "":
        return query
    return SearchQuery(**{**query.__dict__, "after": decode_cursor(cursor, effective, digest)})


def _digest(*parts: object) -> str:
    return hashlib.sha256(orjson.dumps(list(parts))).hexdigest()[:16]


def fts5_expression(
    terms: tuple[str, ...], location_terms: tuple[str, ...], category: str | None = None
) -> str:
    """An SQLite FTS5 MATCH expression: every word quoted (a `"` inside is doubled), all required,
    in the listing's text columns; the location words in the place columns (location, region,
    country); the category (when filtering by one) in the category column, so the index narrows
    the matches before any row is read."""
    parts = []
    if terms:
        words = " ".join(_fts5_quote(t) for t in terms)
        parts.append("({title tags description location region country} : (" + words + "))")
    if location_terms:
        place = " ".join(_fts5_quote(t) for t in location_terms)
        parts.append("({location region country} : (" + place + "))")
    if category is not None and parts:
        parts.append("(category : " + _fts5_quote(category) + ")")
    return " AND ".join(parts)


def _fts5_quote(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def tsquery_text(terms: tuple[str, ...], weight: str | None = None) -> str:
    """A PostgreSQL `to_tsquery` input: each word a quoted lexeme (optionally restricted to a
    weight: the location words must be in the D-weighted place text), all required."""
    label = f":{weight}" if weight else ""
    return " & ".join("'" + t.replace("\\", "\\\\").replace("'", "''") + "'" + label for t in terms)


def encode_cursor(sort: str, digest: str, key: tuple[Any, ...]) -> str:
    raw = orjson.dumps({"v": 1, "s": sort, "f": digest, "k": list(key)})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def bad_cursor(reason: str) -> ClawlistError:
    return ClawlistError(400, "CL_BAD_CURSOR", f"cursor {reason}; start again without one")


def decode_cursor(raw: object, sort: str, digest: str) -> tuple[Any, ...]:
    if not isinstance(raw, str) or len(raw) > MAX_CURSOR_CHARS:
        raise bad_cursor("is not one this server issued")
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise bad_cursor("is not one this server issued") from None
    if not isinstance(data, dict) or data.get("v") != 1 or not isinstance(data.get("k"), list):
        raise bad_cursor("is not one this server issued")
    if data.get("s") != sort or data.get("f") != digest:
        raise bad_cursor("belongs to a different search (other filters or sort)")
    key = data["k"]
    kinds = KEY_KINDS[sort]
    if len(key) != len(kinds):
        raise bad_cursor("is not one this server issued")
    out: list[Any] = []
    for value, kind in zip(key, kinds, strict=True):
        if isinstance(value, bool):
            raise bad_cursor("is not one this server issued")
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, str) and len(value) > 255):
            raise bad_cursor("is not one this server issued")
        out.append(value)
    return tuple(out)
