"""Matrix sync filters a user stores (`POST /user/{u}/filter`) and the filter a /sync applies.

A stored filter never changes, so its parsed form is cached per process (a /sync loop names the
same filter id every time). Ids are numbers from the `filter` counter, handed out as strings;
storing a filter identical to one the user already has returns that one's id (as Synapse does:
clients post their filter at every start).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import and_, func, select

from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.services import Services
from clawlist.core.canonical import canonical_json
from clawlist.core.errors import bad_request, forbidden, not_found
from clawlist.core.filters import DEFAULT_FILTER, Filter, parse_filter
from clawlist.storage.counters import next_value
from clawlist.storage.tables import filters

COUNTER = "filter"
_CACHE_KEY = "matrix.filters"
_INLINE_CACHE_KEY = "matrix.inline_filters"
#: Parsed filters kept per process (each cache is emptied when it grows past this).
CACHE_SIZE = 10_000
MAX_INLINE_LENGTH = 16_384


def _owner(actor: Actor, user_id: str, verb: str) -> str:
    owner = require_agent(actor)
    if user_id != owner:
        raise forbidden(f"you can only {verb} your own filters")
    return owner


def _cache(svc: Services, key: str) -> dict[Any, Filter]:
    cache: dict[Any, Filter] = svc.cache.setdefault(key, {})
    if len(cache) >= CACHE_SIZE:
        cache.clear()
    return cache


async def create(svc: Services, actor: Actor, user_id: str, definition: Any) -> str:
    """Store `definition` for the caller; returns its id (an existing identical filter's, if any)."""
    owner = _owner(actor, user_id, "create")
    parsed = parse_filter(definition)
    encoded = canonical_json(definition).decode()
    async with svc.db.write() as conn:
        existing = (
            await conn.execute(
                select(filters.c.filter_id).where(
                    and_(filters.c.user_id == owner, filters.c.definition == encoded)
                )
            )
        ).scalar()
        if existing is not None:
            return str(existing)
        count = (
            await conn.execute(select(func.count()).select_from(filters).where(filters.c.user_id == owner))
        ).scalar() or 0
        if count >= svc.settings.max_filters_per_user:
            raise bad_request(f"you already have {count} filters, the most one user may store")
        filter_id = await next_value(conn, COUNTER)
        await conn.execute(
            filters.insert().values(
                user_id=owner, filter_id=filter_id, definition=encoded, created_ts=svc.clock.now_ms()
            )
        )
    _cache(svc, _CACHE_KEY)[(owner, filter_id)] = parsed
    return str(filter_id)


def _filter_number(filter_id: str) -> int | None:
    if not isinstance(filter_id, str) or not filter_id.isascii() or not filter_id.isdigit():
        return None
    if len(filter_id) > 18:
        return None
    return int(filter_id)


async def _definition(svc: Services, owner: str, number: int) -> str | None:
    async with svc.db.read() as conn:
        value = (
            await conn.execute(
                select(filters.c.definition).where(
                    and_(filters.c.user_id == owner, filters.c.filter_id == number)
                )
            )
        ).scalar()
    return None if value is None else str(value)


async def get(svc: Services, actor: Actor, user_id: str, filter_id: str) -> dict[str, Any]:
    """The definition stored under `filter_id`; 404 M_NOT_FOUND when the caller has no such filter."""
    owner = _owner(actor, user_id, "read")
    number = _filter_number(filter_id)
    definition = None if number is None else await _definition(svc, owner, number)
    if definition is None:
        raise not_found(f"no filter {filter_id!r}")
    result: dict[str, Any] = orjson.loads(definition)
    return result


async def resolve(svc: Services, actor: Actor, ref: str | None) -> Filter:
    """The filter a /sync names: none, a stored filter's id, or inline JSON (starting with `{`).

    Inline JSON that does not parse or is not a valid filter is 400 M_BAD_JSON; an unknown id is
    400 M_INVALID_PARAM (as Synapse answers).
    """
    if ref is None or ref == "":
        return DEFAULT_FILTER
    if ref.lstrip().startswith("{"):
        inline = _cache(svc, _INLINE_CACHE_KEY)
        found = inline.get(ref)
        if found is None:
            if len(ref) > MAX_INLINE_LENGTH:
                raise bad_request(
                    f"an inline filter may be at most {MAX_INLINE_LENGTH} characters", "M_BAD_JSON"
                )
            try:
                value = orjson.loads(ref)
            except orjson.JSONDecodeError:
                raise bad_request("the filter is not valid JSON", "M_BAD_JSON") from None
            found = inline[ref] = parse_filter(value)
        return found
    owner = actor.principal_id
    number = _filter_number(ref)
    if number is None:
        raise bad_request(f"no filter {ref!r}: a filter is an id or a JSON object")
    cache = _cache(svc, _CACHE_KEY)
    cached = cache.get((owner, number))
    if cached is not None:
        return cached
    definition = await _definition(svc, owner, number)
    if definition is None:
        raise bad_request(f"no filter {ref!r}")
    parsed = cache[(owner, number)] = parse_filter(orjson.loads(definition))
    return parsed
