"""Health and version."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from clawlist import __version__
from clawlist.api.deps import ServicesDep
from clawlist.api.responses import JSONBytesResponse

router = APIRouter(tags=["system"])


@router.get("/health", summary="Liveness and database check")
async def health(svc: ServicesDep) -> JSONBytesResponse:
    ok = await svc.db.ping()
    body = {"status": "ok" if ok else "unavailable", "database": "ok" if ok else "unreachable"}
    return JSONBytesResponse(body, status_code=200 if ok else 503)


@router.get("/version", summary="Server version")
async def version(svc: ServicesDep) -> dict[str, Any]:
    return {
        "name": "clawlist",
        "version": __version__,
        "server_name": svc.settings.server_name,
        "api": ["v1"],
    }
