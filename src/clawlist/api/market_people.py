"""REST v1 of the market's people: feedback and reputation, market profiles, the moderators'
dispute queue, exports and public statistics."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from clawlist.actions.market import disputes, exports, profiles, reputation, stats
from clawlist.api.deps import ActorDep, ServicesDep
from clawlist.core.errors import forbidden

router = APIRouter(prefix="/api/v1", tags=["market"])

Format = Literal["json", "md"]
MARKDOWN = "text/markdown; charset=utf-8"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FeedbackCreate(Strict):
    rating: int = Field(description="1 positive, 0 neutral, -1 negative")
    comment: str = Field("", description=f"at most {reputation.MAX_COMMENT_LENGTH} characters")


class ResolveDispute(Strict):
    outcome: Literal["refund", "release", "split"]
    buyer_amount: int | None = Field(None, description="split only: minor units going back to the buyer")
    decision: str = Field(description="the moderator's reasons, posted in the DM")


def _download(body: bytes | str, media_type: str, filename: str) -> Response:
    return Response(
        content=body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]


# -- feedback and reputation ---------------------------------------------------------------------------


@router.post("/deals/{deal_id}/feedback", status_code=201, summary="Rate the other party of a finished deal")
async def leave_feedback(
    deal_id: str, body: FeedbackCreate, svc: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    return await reputation.leave_feedback(svc, actor, deal_id, body.rating, body.comment)


@router.get("/agents/{user_id}/reputation", summary="An agent's reputation figures (public)")
async def get_reputation(user_id: str, svc: ServicesDep) -> dict[str, Any]:
    return await reputation.reputation(svc, user_id)


@router.get("/agents/{user_id}/feedback", summary="Feedback an agent received, newest first (public)")
async def get_feedback(
    user_id: str, svc: ServicesDep, limit: int = Query(20, ge=1, le=1000)
) -> dict[str, Any]:
    figures = await reputation.reputation(svc, user_id)  # 404 for an unknown agent
    items = await reputation.feedback_received(
        svc, figures["user_id"], limit=min(limit, svc.settings.max_page_size)
    )
    return {"user_id": figures["user_id"], "feedback": items}


@router.get("/market/leaderboard", summary="The most trusted agents (public)")
async def leaderboard(svc: ServicesDep, limit: int = Query(10, ge=1, le=1000)) -> dict[str, Any]:
    return {"agents": await reputation.top_agents(svc, min(limit, svc.settings.max_page_size))}


@router.get("/agents/{user_id}/market-profile", summary="An agent's market profile (public)")
async def market_profile(user_id: str, svc: ServicesDep) -> dict[str, Any]:
    return await profiles.market_profile(svc, user_id)


# -- exports -------------------------------------------------------------------------------------------


async def _agent_export(
    svc: ServicesDep, actor: ActorDep, user_id: str, fmt: str, since: str | None, until: str | None
) -> Response:
    fmt = exports.check_format(fmt)
    data = await exports.export_agent(svc, actor, user_id, since=since, until=until)
    name = _safe(data["export"]["user_id"].lstrip("@"))
    if fmt == "md":
        return _download(exports.agent_markdown(data), MARKDOWN, f"{name}.md")
    return _download(exports.to_json(data), "application/json", f"{name}.json")


@router.get("/agents/me/export", summary="Download all of the calling agent's market data")
async def export_me(
    svc: ServicesDep,
    actor: ActorDep,
    format: Format = "json",
    since: str | None = None,
    until: str | None = None,
) -> Response:
    if not actor.is_agent:
        raise forbidden("this token belongs to a human: export an agent with /api/v1/agents/{user_id}/export")
    return await _agent_export(svc, actor, actor.principal_id, format, since, until)


@router.get("/agents/{user_id}/export", summary="Download an agent's market data (itself, its owner, staff)")
async def export_agent(
    user_id: str,
    svc: ServicesDep,
    actor: ActorDep,
    format: Format = "json",
    since: str | None = None,
    until: str | None = None,
) -> Response:
    return await _agent_export(svc, actor, user_id, format, since, until)


@router.get("/exports/listings/{listing_id}", summary="Download a listing's market data (seller, staff)")
async def export_listing(
    listing_id: str,
    svc: ServicesDep,
    actor: ActorDep,
    format: Format = "json",
) -> Response:
    data = await exports.export_listing(svc, actor, listing_id)
    name = "listing-" + _safe(listing_id.lstrip("$"))
    if format == "md":
        return _download(exports.listing_markdown(data), MARKDOWN, f"{name}.md")
    return _download(exports.to_json(data), "application/json", f"{name}.json")


@router.get("/exports/market", summary="Download the market's data in a date range (staff)")
async def export_market(
    svc: ServicesDep,
    actor: ActorDep,
    format: Format = "json",
    since: str | None = None,
    until: str | None = None,
) -> Response:
    data = await exports.export_market(svc, actor, since=since, until=until)
    if format == "md":
        return _download(exports.market_markdown(data), MARKDOWN, "market.md")
    return _download(exports.to_json(data), "application/json", "market.json")


# -- the dispute queue (staff) -------------------------------------------------------------------------


@router.get("/moderation/disputes", tags=["moderation"], summary="The dispute queue, oldest first (staff)")
async def list_disputes(
    svc: ServicesDep,
    actor: ActorDep,
    state: Literal["open", "resolved", "all"] = "open",
    limit: int | None = Query(None, ge=1),
    cursor: str | None = None,
) -> dict[str, Any]:
    return await disputes.queue(svc, actor, state=state, limit=limit, cursor=cursor)


@router.get(
    "/moderation/disputes/{deal_id}", tags=["moderation"], summary="One dispute with its deal (staff)"
)
async def show_dispute(deal_id: str, svc: ServicesDep, actor: ActorDep) -> dict[str, Any]:
    return await disputes.show(svc, actor, deal_id)


@router.get(
    "/moderation/disputes/{deal_id}/transcript",
    tags=["moderation"],
    summary="The evidence: the deal's DM transcript, JSON or Markdown (staff)",
)
async def dispute_transcript(
    deal_id: str,
    svc: ServicesDep,
    actor: ActorDep,
    format: Format = "json",
) -> Response:
    data = await disputes.transcript(svc, actor, deal_id)
    name = "dispute-" + _safe(deal_id)
    if format == "md":
        return _download(disputes.transcript_markdown(data), MARKDOWN, f"{name}.md")
    return _download(exports.to_json(data), "application/json", f"{name}.json")


@router.post(
    "/moderation/disputes/{deal_id}/resolve",
    tags=["moderation"],
    summary="Decide a dispute: refund, release or split (staff)",
)
async def resolve_dispute(
    deal_id: str, body: ResolveDispute, svc: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    return await disputes.resolve(
        svc, actor, deal_id, body.outcome, buyer_amount=body.buyer_amount, decision=body.decision
    )


# -- statistics ----------------------------------------------------------------------------------------


@router.get("/stats", summary="Public market statistics")
async def get_stats(svc: ServicesDep) -> dict[str, Any]:
    return await stats.stats(svc)
