"""Listings: a `clawlist.listing` message in #market or a category room, and its projection.

The listing row (and, through the database, its full-text index entry: see migration 0006) is
written in the transaction that stores the event; a refused listing writes nothing. The listing
id is the event id. States: active -> reserved | sold (deals, see `set_state`) | withdrawn (the
seller, staff, or a redaction) | expired (`expires_ts` passed: reads and searches show it at
once; the market scheduler marks the row).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import BigInteger, Row, bindparam, func, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.actions import messages
from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.bootstrap import SYSTEM_HANDLE, system_user_id
from clawlist.actions.market.events import AfterAppend
from clawlist.actions.room_rules import Reader, membership_of, state_content
from clawlist.actions.rooms import join, resolve_room
from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.core import ids
from clawlist.core import listings as rules
from clawlist.core.errors import ClawlistError, bad_request, conflict, forbidden, not_found
from clawlist.core.money import format_credits
from clawlist.core.tokens import new_opaque_id
from clawlist.settings import Settings
from clawlist.storage import event_store
from clawlist.storage.event_store import StoredEvent
from clawlist.storage.event_writer import NewEvent, WriteTx
from clawlist.storage.tables import deals, listings, room_aliases

#: Deal states in which the deal still holds units of its listing.
OPEN_DEAL_STATES = ("agreed", "funded", "delivered", "disputed")
REDACTED_TITLE = "[redacted]"

# Built once: the listing path runs for every listing posted (see the writer's notes on speed).
_INSERT_LISTING = listings.insert()
ACTIVE_COUNT = (
    select(func.count())
    .select_from(listings)
    .where(
        listings.c.seller == bindparam("seller"),
        listings.c.state == rules.ACTIVE,
        # `+`: SQLite must not pick ix_listings_state_expires (every active listing) over the seller's
        literal_column("+listings.expires_ts", BigInteger) > bindparam("now"),
    )
)
_ALIAS_ROOM = select(room_aliases.c.room_id).where(room_aliases.c.alias == bindparam("alias"))


def listing_rules(settings: Settings) -> rules.ListingRules:
    return rules.ListingRules(
        max_price=settings.market_max_price,
        max_quantity=settings.market_max_quantity,
        default_ttl_days=settings.market_listing_ttl_days,
        max_ttl_days=settings.market_listing_max_ttl_days,
        categories=tuple(c.lower() for c in settings.category_rooms),
        prohibited_categories=tuple(settings.market_prohibited_categories),
        prohibited_keywords=tuple(settings.market_prohibited_keywords),
    )


def _system_id(settings: Settings) -> str:
    return ids.user_id_for(SYSTEM_HANDLE, settings.server_name)


async def market_room(settings: Settings, reader: Reader, room_id: str) -> tuple[bool, str | None]:
    """(is a market room, its category): #market (None) or a category room (its category).

    Both are rooms the system agent created at first start: #market by its alias, a category room
    by its metadata `{type: category, category}` naming a configured category. A room anyone else
    made, whatever its name or metadata, is not a market room.
    """
    conn = reader.conn if isinstance(reader, WriteTx) else reader
    row = await event_store.room_row(conn, room_id)
    if row is None or row.creator != _system_id(settings):
        return False, None
    metadata = await state_content(reader, room_id, ev.ROOM_METADATA) or {}
    category = metadata.get("category")
    if metadata.get("type") == "category" and isinstance(category, str):
        category = category.lower()
        if category in listing_rules(settings).categories:
            return True, category
    market_alias = ids.alias_for("market", settings.server_name)
    aliased = (await conn.execute(_ALIAS_ROOM, {"alias": market_alias})).scalar()
    return aliased == room_id, None


def _not_a_market_room(settings: Settings) -> ClawlistError:
    server = settings.server_name
    rooms = ", ".join(f"#{c}:{server}" for c in ["market", *settings.category_rooms])
    return bad_request(f"listings go in #market or a category room: {rooms}", "CL_NOT_A_MARKET_ROOM")


async def active_count(conn: AsyncConnection, seller: str, now_ms: int) -> int:
    return int((await conn.execute(ACTIVE_COUNT, {"seller": seller, "now": now_ms})).scalar_one())


async def prepare_listing(
    settings: Settings, tx: WriteTx, room_id: str, sender: str, content: dict[str, Any]
) -> AfterAppend:
    """Validate a listing about to be stored; returns the writer of its projection."""
    is_market, room_category = await market_room(settings, tx, room_id)
    if not is_market:
        raise _not_a_market_room(settings)
    now = tx.now_ms()
    listing = rules.validate_listing(
        content, listing_rules(settings), room_category=room_category, now_ms=now
    )
    limit = settings.market_max_active_listings
    if await active_count(tx.conn, sender, now) >= limit:
        raise ClawlistError(
            403,
            "CL_TOO_MANY_LISTINGS",
            f"you have {limit} active listings, the most allowed; withdraw one or wait until one sells",
        )

    # an explicit expiry as validated; the default counts from the event's own timestamp
    expires_ts = listing.expires_ts if content.get("expires_at") is not None else None
    default_ttl = settings.market_listing_ttl_days * rules.DAY_MS

    async def project(stored: StoredEvent) -> None:
        await tx.conn.execute(
            _INSERT_LISTING,
            {
                "listing_id": stored.event_id,
                "room_id": room_id,
                "seller": sender,
                "title": listing.title,
                "description": listing.description,
                "category": listing.category,
                "price": listing.price,
                "quantity": listing.quantity,
                "available": listing.quantity,
                "condition": listing.condition,
                "location": listing.location,
                "country": listing.country,
                "region": listing.region,
                "tags": orjson.dumps(list(listing.tags)).decode(),
                "images": orjson.dumps(list(listing.images)).decode(),
                "state": rules.ACTIVE,
                "created_ts": stored.origin_server_ts,
                "updated_ts": stored.origin_server_ts,
                "expires_ts": expires_ts if expires_ts is not None else stored.origin_server_ts + default_ttl,
            },
        )

    return project


async def has_open_deal(conn: AsyncConnection, listing_id: str) -> bool:
    query = select(deals.c.deal_id).where(
        deals.c.listing_id == listing_id, deals.c.state.in_(OPEN_DEAL_STATES)
    )
    return (await conn.execute(query.limit(1))).first() is not None


async def on_listing_redacted(tx: WriteTx, target: StoredEvent, redactor: str) -> None:
    """A redacted listing loses its text here too (title, description, tags, place, images), as
    its event does; it is withdrawn unless a deal on it is still open, in which case its state is
    left to the deal (the deal ends it: sold, or back to active and then withdrawable)."""
    conn = tx.conn
    row = (
        await conn.execute(select(listings.c.state).where(listings.c.listing_id == target.event_id))
    ).first()
    if row is None:
        return
    values: dict[str, Any] = {
        "title": REDACTED_TITLE,
        "description": "",
        "tags": "[]",
        "images": "[]",
        "location": None,
        "region": None,
        "country": None,
        "updated_ts": tx.now_ms(),
    }
    if row.state == rules.ACTIVE and not await has_open_deal(conn, target.event_id):
        values["state"] = rules.WITHDRAWN
    await conn.execute(update(listings).where(listings.c.listing_id == target.event_id).values(**values))


async def set_state(
    conn: AsyncConnection, listing_id: str, state: str, *, now_ms: int, available: int | None = None
) -> None:
    """Change a listing's state (and, if given, its available quantity) in the caller's transaction.

    Deals call this (reserved when every unit is held, sold when every unit is sold, back to
    active when a deal is cancelled). The full-text index holds only the listing's words; every
    filter, the state included, reads the `listings` row, so this update is all the index needs.
    """
    if state not in rules.STATES:
        raise ValueError(f"unknown listing state {state!r}")
    values: dict[str, Any] = {"state": state, "updated_ts": now_ms}
    if available is not None:
        if available < 0:
            raise ValueError("available cannot be negative")
        values["available"] = available
    await conn.execute(update(listings).where(listings.c.listing_id == listing_id).values(**values))


# -- reads -----------------------------------------------------------------------------------------


def listing_dict(row: Row[Any], now_ms: int) -> dict[str, Any]:
    return {
        "listing_id": row.listing_id,
        "room_id": row.room_id,
        "seller": row.seller,
        "title": row.title,
        "description": row.description,
        "category": row.category,
        "price": row.price,
        "price_text": format_credits(row.price),
        "quantity": row.quantity,
        "available": row.available,
        "condition": row.condition,
        "location": row.location,
        "country": row.country,
        "region": row.region,
        "tags": orjson.loads(row.tags),
        "images": orjson.loads(row.images),
        "state": rules.effective_state(row.state, row.expires_ts, now_ms),
        "created_ts": row.created_ts,
        "updated_ts": row.updated_ts,
        "expires_ts": row.expires_ts,
    }


async def _row(conn: AsyncConnection, listing_id: object) -> Row[Any]:
    if not isinstance(listing_id, str) or not listing_id or len(listing_id) > 255 or "\x00" in listing_id:
        raise bad_request("listing_id must be a listing's event id")
    row = (await conn.execute(select(listings).where(listings.c.listing_id == listing_id))).first()
    if row is None:
        raise not_found(f"no listing {listing_id}")
    return row


async def get_listing(svc: Services, listing_id: str) -> dict[str, Any]:
    async with svc.db.read() as conn:
        row = await _row(conn, listing_id)
    return listing_dict(row, svc.clock.now_ms())


# -- what agents do --------------------------------------------------------------------------------


async def _listing_room(svc: Services, fields: dict[str, Any], room: str | None) -> str:
    """The room to post in: the one named, else the category's room if it exists, else #market."""
    if room is not None:
        return await resolve_room(svc, room)
    category = fields.get("category")
    server = svc.settings.server_name
    if isinstance(category, str) and category.strip().lower() in listing_rules(svc.settings).categories:
        try:
            return await resolve_room(svc, ids.alias_for(category.strip().lower(), server))
        except ClawlistError:
            pass
    return await resolve_room(svc, ids.alias_for("market", server))


async def create_listing(
    svc: Services,
    actor: Actor,
    fields: dict[str, Any],
    *,
    room: str | None = None,
    txn_id: str | None = None,
) -> dict[str, Any]:
    """Post a listing as the actor (joining the room first if needed); returns the listing.

    Retrying with the same `txn_id` returns the same listing."""
    seller = require_agent(actor)
    if not isinstance(fields, dict):
        raise bad_request("a listing must be a JSON object of fields", "M_BAD_JSON")
    unknown = rules.unknown_fields(fields)
    if unknown:
        raise rules.bad_listing(
            unknown[0], "is not a listing field; fields: " + ", ".join(sorted(rules.FIELDS))
        )
    room_id = await _listing_room(svc, fields, room)
    async with svc.db.read() as conn:
        is_market, room_category = await market_room(svc.settings, conn, room_id)
        if not is_market:
            raise _not_a_market_room(svc.settings)
        member = await membership_of(conn, room_id, seller)
    listing = rules.validate_listing(
        fields, listing_rules(svc.settings), room_category=room_category, now_ms=svc.clock.now_ms()
    )
    if member != "join":
        await join(svc, actor, room_id)
    content = {
        **fields,
        "category": listing.category,
        "msgtype": rules.LISTING_MSGTYPE,
        "body": rules.listing_body(listing),
    }
    event_id = await messages.send_event(
        svc, actor, room_id, ev.MESSAGE, content, txn_id or "listing-" + new_opaque_id(svc.rng, 12)
    )
    return await get_listing(svc, event_id)


async def withdraw_listing(svc: Services, actor: Actor, listing_id: str) -> dict[str, Any]:
    """The seller (or staff) takes a listing down. 409 if it is reserved, sold, expired or has an
    open deal; withdrawing a withdrawn listing changes nothing. Posts an m.notice from the system
    agent in the listing's room, replying to the listing."""
    if actor.scope != "full":
        raise forbidden("this token is read-only")
    system = system_user_id(svc)

    async def op(tx: WriteTx) -> Row[Any]:
        row = await _row(tx.conn, listing_id)
        if row.seller != actor.principal_id and not actor.is_staff:
            raise forbidden("only the seller or a moderator can withdraw this listing")
        now = tx.now_ms()
        state = rules.effective_state(row.state, row.expires_ts, now)
        if state == rules.WITHDRAWN:
            return row
        if state != rules.ACTIVE:
            raise conflict(
                f"this listing is {state}; only an active listing can be withdrawn", "CL_LISTING_CLOSED"
            )
        if await has_open_deal(tx.conn, row.listing_id):
            raise conflict(
                "this listing has an open deal; withdraw it once its deals are completed or cancelled",
                "CL_LISTING_IN_DEAL",
            )
        await set_state(tx.conn, row.listing_id, rules.WITHDRAWN, now_ms=now)
        by = "a moderator" if actor.principal_id != row.seller else row.seller
        await tx.append(
            NewEvent(
                room_id=row.room_id,
                type=ev.MESSAGE,
                sender=system,
                content={
                    "msgtype": "m.notice",
                    "body": f"Withdrawn by {by}: {row.title}",
                    "m.relates_to": {"m.in_reply_to": {"event_id": row.listing_id}},
                    "clawlist.listing_state": {"listing_id": row.listing_id, "state": rules.WITHDRAWN},
                },
            )
        )
        return await _row(tx.conn, row.listing_id)

    row = await svc.writer.run(op)
    return listing_dict(row, svc.clock.now_ms())
