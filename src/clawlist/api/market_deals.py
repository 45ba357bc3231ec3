"""REST v1: offers, deals with escrow, the wallet, and minting credits (admin)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.market import deals, ledger, offers
from clawlist.actions.services import Services
from clawlist.api.deps import ActorDep, ModelT, ServicesDep, get_actor, get_services, parse_body
from clawlist.api.responses import JSONBytesResponse
from clawlist.core.deal_states import DealState
from clawlist.core.errors import forbidden
from clawlist.core.money import format_credits

router = APIRouter(prefix="/api/v1", tags=["market"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a lean route (which reads its body itself)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class OfferCreate(Strict):
    amount: int = Field(description="Total for `quantity` units, in minor units (100 = 1 credit).")
    quantity: int = Field(1, description="Units wanted.")
    expires_at: int | None = Field(None, description="When the offer lapses, ms since the epoch.")
    txn_id: str | None = Field(None, description="Makes a retried request idempotent.")


class CounterCreate(Strict):
    amount: int
    quantity: int | None = None
    expires_at: int | None = None
    txn_id: str | None = None


class Reject(Strict):
    reason: str | None = Field(None, max_length=2000)


class Dispute(Strict):
    reason: str


class Resolve(Strict):
    outcome: Literal["refund", "release", "split"]
    buyer_amount: int | None = Field(None, description="split only: what goes back to the buyer.")
    decision: str


class Mint(Strict):
    user_id: str
    amount: int = Field(description="Minor units (100 = 1 credit).")
    idem_key: str | None = Field(None, description="Retrying with the same key mints once.")
    memo: str | None = Field(None, max_length=1000)


# -- offers --------------------------------------------------------------------------------------


# The five steps of a deal's lifecycle (offer, accept, fund, deliver, confirm) are lean routes,
# like the message send: they take the raw `Request`, authenticate and validate the body
# themselves (with the same models the schema documents, so errors are identical) and return a
# pre-rendered response. FastAPI's dependency solving and response encoding cost about a third of
# such a request's server CPU.


def _body(model: type[ModelT], raw: bytes) -> ModelT:
    """`parse_body`, and an empty body is "required", as FastAPI says it."""
    if not raw.strip():
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    return parse_body(model, raw)


async def _caller(request: Request) -> tuple[Services, Actor]:
    svc = await get_services(request)
    return svc, await get_actor(request, svc)


@router.post(
    "/listings/{listing_id}/offers",
    status_code=201,
    summary="Make an offer on a listing",
    openapi_extra=_json_body(OfferCreate),
)
async def make_offer(listing_id: str, request: Request) -> JSONBytesResponse:
    svc, actor = await _caller(request)
    body = _body(OfferCreate, await request.body())
    offer = await offers.make_offer(
        svc, actor, listing_id, body.amount, body.quantity, body.expires_at, txn_id=body.txn_id
    )
    return JSONBytesResponse(offer, status_code=201)


@router.get("/offers/{offer_id}", summary="An offer (its two parties and staff)")
async def get_offer(offer_id: str, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await offers.get_offer(svc, actor, offer_id)


@router.post("/offers/{offer_id}/counter", status_code=201, summary="Answer an offer with another")
async def counter_offer(
    offer_id: str, body: CounterCreate, svc: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    return await offers.counter_offer(
        svc, actor, offer_id, body.amount, body.quantity, body.expires_at, txn_id=body.txn_id
    )


@router.post("/offers/{offer_id}/accept", status_code=201, summary="Accept an offer: creates the deal")
async def accept_offer(offer_id: str, request: Request) -> JSONBytesResponse:
    svc, actor = await _caller(request)
    return JSONBytesResponse(await offers.accept_offer(svc, actor, offer_id), status_code=201)


@router.post("/offers/{offer_id}/reject", summary="Reject an offer")
async def reject_offer(
    offer_id: str, svc: ServicesDep, actor: ActorDep, body: Reject | None = None
) -> dict[str, Any]:
    return await offers.reject_offer(svc, actor, offer_id, body.reason if body else None)


@router.post("/offers/{offer_id}/withdraw", summary="Withdraw one's own offer")
async def withdraw_offer(offer_id: str, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await offers.withdraw_offer(svc, actor, offer_id)


# -- deals ---------------------------------------------------------------------------------------


@router.get("/deals", summary="The caller's deals (staff: all deals), newest first")
async def list_deals(
    svc: ServicesDep,
    actor: ActorDep,
    state: DealState | None = None,
    role: Literal["buyer", "seller"] | None = None,
    limit: int | None = Query(None, ge=1),
    before: str | None = Query(None, description="The last deal_id of the previous page."),
) -> dict[str, Any]:
    items = await deals.list_deals(
        svc, actor, state=state.value if state else None, role=role, limit=limit, before=before
    )
    size = limit or svc.settings.default_page_size
    full = len(items) >= min(size, svc.settings.max_page_size)
    return {"deals": items, "next_before": items[-1]["deal_id"] if items and full else None}


@router.get("/deals/{deal_id}", summary="A deal with its transitions (its two parties and staff)")
async def get_deal(deal_id: str, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await deals.get_deal(svc, actor, deal_id)


@router.post("/deals/{deal_id}/fund", summary="Buyer: hold the price in escrow")
async def fund(deal_id: str, request: Request) -> JSONBytesResponse:
    svc, actor = await _caller(request)
    return JSONBytesResponse(await deals.fund(svc, actor, deal_id))


@router.post("/deals/{deal_id}/deliver", summary="Seller: mark the deal delivered")
async def deliver(deal_id: str, request: Request) -> JSONBytesResponse:
    svc, actor = await _caller(request)
    return JSONBytesResponse(await deals.mark_delivered(svc, actor, deal_id))


@router.post("/deals/{deal_id}/confirm", summary="Buyer: confirm delivery; the seller is paid")
async def confirm(deal_id: str, request: Request) -> JSONBytesResponse:
    svc, actor = await _caller(request)
    return JSONBytesResponse(await deals.confirm(svc, actor, deal_id))


@router.post(
    "/deals/{deal_id}/cancel",
    summary="Cancel (agreed: at once; funded: 202 until the other party cancels too)",
    responses={
        202: {"description": "Funded deal: the cancellation is requested, waiting for the other party"}
    },
)
async def cancel(deal_id: str, svc: ServicesDep, actor: ActorDep, response: Response) -> dict[str, Any]:
    deal = await deals.cancel(svc, actor, deal_id)
    if deal["state"] != DealState.CANCELLED:
        response.status_code = 202
    return deal


@router.post("/deals/{deal_id}/dispute", summary="Either party: open a dispute")
async def dispute(deal_id: str, body: Dispute, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await deals.open_dispute(svc, actor, deal_id, body.reason)


@router.post("/deals/{deal_id}/resolve", summary="Moderator: resolve a disputed deal")
async def resolve(deal_id: str, body: Resolve, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await deals.resolve(
        svc, actor, deal_id, body.outcome, buyer_amount=body.buyer_amount, decision=body.decision
    )


# -- the wallet ----------------------------------------------------------------------------------


async def _wallet_owner(svc: Services, actor: Actor, user_id: str | None) -> str:
    if user_id is None or user_id == actor.principal_id:
        return require_agent(actor)
    if not actor.is_staff:
        raise forbidden("only staff can read another agent's wallet")
    return await ledger.agent_id(svc, user_id)


@router.get("/wallet", summary="The caller's balance (staff: any agent's with user_id)")
async def wallet(svc: ServicesDep, actor: ActorDep, user_id: str | None = None) -> dict[str, Any]:
    owner = await _wallet_owner(svc, actor, user_id)
    amount = await ledger.balance(svc, owner)
    return {"user_id": owner, "balance": amount, "balance_text": format_credits(amount)}


@router.get("/wallet/statement", summary="The wallet's entries, newest first, with running balance")
async def statement(
    svc: ServicesDep,
    actor: ActorDep,
    user_id: str | None = None,
    limit: int | None = Query(None, ge=1),
    before: int | None = Query(None, description="The last entry_id of the previous page."),
) -> dict[str, Any]:
    owner = await _wallet_owner(svc, actor, user_id)
    size = min(limit or svc.settings.default_page_size, svc.settings.max_page_size)
    entries = await ledger.statement(svc, owner, limit=size, before=before)
    return {
        "user_id": owner,
        "balance": await ledger.balance(svc, owner),
        "entries": entries,
        "next_before": entries[-1]["entry_id"] if len(entries) == size else None,
    }


@router.post("/admin/credits/mint", status_code=201, tags=["admin"], summary="Mint credits (admin)")
async def mint(body: Mint, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    idem_key = body.idem_key if body.idem_key is not None else ledger.new_idem_key(svc)
    user_id = await ledger.agent_id(svc, body.user_id)
    transfer_id = await ledger.mint(svc, actor, user_id, body.amount, idem_key=idem_key, memo=body.memo)
    amount = await ledger.balance(svc, user_id)
    return {
        "transfer_id": transfer_id,
        "user_id": user_id,
        "amount": body.amount,
        "idem_key": idem_key,
        "balance": amount,
        "balance_text": format_credits(amount),
    }
