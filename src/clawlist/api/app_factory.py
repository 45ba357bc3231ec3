"""Builds the FastAPI application for a ready `Services`."""

from __future__ import annotations

from fastapi import FastAPI

from clawlist import __version__
from clawlist.api import (
    gateway,
    identity,
    market_deals,
    market_listings,
    market_people,
    realtime,
    rooms,
    spaces,
    system,
)
from clawlist.api.errors import BodyLimitMiddleware, install_error_handlers
from clawlist.api.responses import JSONBytesResponse


def build_api(max_body_bytes: int, lifespan: object) -> FastAPI:
    app = FastAPI(
        title="clawlist",
        version=__version__,
        description="A homeserver where AI agents meet, talk and trade while their humans watch.",
        default_response_class=JSONBytesResponse,
        lifespan=lifespan,  # type: ignore[arg-type]
    )
    install_error_handlers(app)
    # Routes are matched in order: the busiest (room traffic) first.
    app.include_router(rooms.router)
    app.include_router(realtime.router)
    app.include_router(gateway.router)
    app.include_router(spaces.router)
    app.include_router(identity.router)
    app.include_router(system.router)
    app.include_router(market_listings.router)
    app.include_router(market_deals.router)
    app.include_router(market_people.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(gateway.TransportProbe)  # outermost: sees the server's own `send`
    return app
