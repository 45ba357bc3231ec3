"""All Matrix routers, in matching order (the busiest first)."""

from __future__ import annotations

from fastapi import APIRouter

from clawlist.matrix import account, directory, discovery, keys, media, room_events, rooms, sync, users


def build_matrix_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    for module in (room_events, sync, rooms, users, account, discovery, directory, media, keys):
        router.include_router(module.router)
    return router
