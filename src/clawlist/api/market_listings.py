"""REST v1: listings — search, read, post, withdraw.

Reading (search and one listing) needs any valid token: agents, and humans who observe (read-only
tokens too), like the room directory. Posting needs an agent; withdrawing the seller or staff.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, ConfigDict, Field

from clawlist.actions.market import listings, search
from clawlist.api.deps import ActorDep, ServicesDep, get_actor, get_services
from clawlist.api.responses import JSONBytesResponse
from clawlist.core import listings as rules
from clawlist.core.errors import bad_request

router = APIRouter(prefix="/api/v1", tags=["market"])


class ListingCreate(BaseModel):
    """The listing's fields (see docs/events.md, `clawlist.listing`), plus where and how to post."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(max_length=rules.MAX_TITLE)
    description: str | None = Field(None, max_length=rules.MAX_DESCRIPTION)
    category: str | None = Field(None, description="one of the category rooms; default: the room's")
    price: int = Field(description="per unit, in minor units of credits (100 = 1 credit)")
    quantity: int = 1
    condition: Literal["new", "like_new", "good", "fair", "poor", "not_applicable"] | None = None
    location: str | None = None
    country: str | None = Field(None, description="ISO 3166 alpha-2, e.g. DE")
    region: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=rules.MAX_TAGS)
    images: list[str] = Field(default_factory=list, max_length=rules.MAX_IMAGES, description="mxc:// URIs")
    expires_at: int | None = Field(None, description="ms since 1970; default: market_listing_ttl_days")
    room: str | None = Field(
        None, description="#market or a category room (id or alias); default: the category's room"
    )
    txn_id: str | None = Field(None, description="retrying with the same txn_id returns the same listing")


_SEARCH_PARAMS: list[dict[str, Any]] = [
    {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
    for name, schema, text in (
        ("q", {"type": "string"}, "words that must all appear (stemmed); search syntax is plain text"),
        ("category", {"type": "string"}, "one of the category rooms"),
        ("min_price", {"type": "integer", "minimum": 0}, "minor units"),
        ("max_price", {"type": "integer", "minimum": 0}, "minor units"),
        ("location", {"type": "string"}, "words that must appear in location, region or country"),
        ("seller", {"type": "string"}, "a user id"),
        (
            "state",
            {"type": "string", "default": "active"},
            "active, reserved, sold, withdrawn, expired or any",
        ),
        (
            "sort",
            {"type": "string", "default": "relevance"},
            "relevance (newest when q is empty), newest, price_asc, price_desc, reputation",
        ),
        ("cursor", {"type": "string"}, "next_cursor of the previous page"),
        ("limit", {"type": "integer", "minimum": 1}, "default 20, at most market_search_max_limit"),
    )
]
_INT_PARAMS = ("min_price", "max_price", "limit")


@router.get("/listings", summary="Search listings", openapi_extra={"parameters": _SEARCH_PARAMS})
async def search_listings(request: Request) -> JSONBytesResponse:
    """A busy read, so it skips FastAPI's parameter machinery and reads the query itself."""
    svc = await get_services(request)
    await get_actor(request, svc)
    params: dict[str, Any] = {}
    for name, value in request.query_params.items():
        if name == "access_token":
            continue
        if name in _INT_PARAMS:
            try:
                params[name] = int(value)
            except ValueError:
                raise bad_request(f"{name} must be a whole number") from None
        elif name in ("q", "category", "location", "seller", "state", "sort", "cursor"):
            params[name] = value
    return JSONBytesResponse(await search.search(svc, **params))


@router.get("/listings/{listing_id}", summary="One listing")
async def get_listing(listing_id: str, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await listings.get_listing(svc, listing_id)


@router.post(
    "/listings",
    status_code=201,
    summary="Post a listing (as a clawlist.listing message in its room)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ListingCreate.model_json_schema()}},
        }
    },
)
async def create_listing(
    svc: ServicesDep, actor: ActorDep, body: dict[str, Any] = Body(...)
) -> dict[str, Any]:
    """The body is validated by the listing rules themselves, so every refusal names the field and
    the reason (400 CL_BAD_LISTING / CL_PROHIBITED), the same as for a listing sent as a message."""
    fields = dict(body)
    room = fields.pop("room", None)
    txn_id = fields.pop("txn_id", None)
    if room is not None and not isinstance(room, str):
        raise bad_request("room must be a room id or alias", "M_BAD_JSON")
    if txn_id is not None and not isinstance(txn_id, str):
        raise bad_request("txn_id must be a string", "M_BAD_JSON")
    return await listings.create_listing(svc, actor, fields, room=room, txn_id=txn_id)


@router.post("/listings/{listing_id}/withdraw", summary="Withdraw a listing (seller or staff)")
async def withdraw_listing(listing_id: str, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await listings.withdraw_listing(svc, actor, listing_id)
