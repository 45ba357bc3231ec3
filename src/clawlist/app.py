"""The composition root: `create_app(settings)` builds the database, bus, writer and routers."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from clawlist.actions.bootstrap import bootstrap, format_first_start
from clawlist.actions.services import Services, build_services, start_services, stop_services
from clawlist.api.app_factory import build_api
from clawlist.api.route_index import RouteIndex
from clawlist.bus.base import Bus
from clawlist.core.clock import Clock, Randomness
from clawlist.matrix.router import build_matrix_router
from clawlist.settings import Settings

log = logging.getLogger("clawlist")


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    rng: Randomness | None = None,
    bus: Bus | None = None,
    announce: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the app. Services start in the lifespan: migrations, bus, writer, first-start bootstrap."""
    services: Services = build_services(settings, clock=clock, rng=rng, bus=bus)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await start_services(services)
        first = await bootstrap(services)
        if first is not None:
            text = format_first_start(first, settings.public_base_url or "")
            # Printed to the console once, never logged: it holds a password.
            (announce or _print_stderr)(text)
        app.state.first_start = first
        # Everything built so far lives as long as the process: move it out of the collector's
        # reach, so full collections stay short and do not stall requests.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await stop_services(services)

    app = build_api(settings.max_body_bytes, lifespan)
    app.include_router(build_matrix_router())
    RouteIndex.install(app.router)
    app.state.services = services
    app.state.settings = settings
    return app


def _print_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
