"""Fixtures. Storage and API tests run on SQLite, and on PostgreSQL when it is reachable.

Under CI=true an unreachable PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clawlist.app import create_app
from clawlist.settings import Settings

PG_URL = os.environ.get("CLAWLIST_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    if _pg_reachable():
        return
    if IN_CI:
        pytest.fail("PostgreSQL at 127.0.0.1:5432 is unreachable, and CI=true requires it")
    pytest.skip("PostgreSQL at 127.0.0.1:5432 is unreachable (start it, or run in CI to require it)")


async def _drop_schema(schema: str) -> None:
    import asyncpg

    dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        require_postgres()
    return str(request.param)


@pytest.fixture
async def settings_for(backend: str, tmp_path: Path) -> AsyncIterator[Any]:
    """A factory of Settings on the chosen backend; a fresh PostgreSQL schema per test."""
    schemas: list[str] = []

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path / "data", "server_name": "test.local"}
        if backend == "postgres":
            schema = "t_" + secrets.token_hex(6)
            schemas.append(schema)
            values["database_url"] = PG_URL
            values["database_schema"] = schema
        values.update(overrides)
        return Settings(**values)

    yield make
    for schema in schemas:
        await _drop_schema(schema)


@pytest.fixture
async def app_env(settings_for: Any) -> AsyncIterator[dict[str, Any]]:
    """A running app (lifespan started) and an httpx client speaking ASGI to it."""
    announced: list[str] = []
    settings = settings_for()
    app = create_app(settings, announce=announced.append)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = app.state.first_start
            yield {
                "app": app,
                "client": client,
                "settings": settings,
                "first": first,
                "token": first.registration_token,
                "services": app.state.services,
                "announced": announced,
            }


@pytest.fixture
def client(app_env: dict[str, Any]) -> httpx.AsyncClient:
    c: httpx.AsyncClient = app_env["client"]
    return c


@pytest.fixture
def reg_token(app_env: dict[str, Any]) -> str:
    return str(app_env["token"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


__all__ = ["asyncio", "free_port"]


# -- the bus services (Redis and NATS), same rules as PostgreSQL ------------------------------------

REDIS_URL = os.environ.get("CLAWLIST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("CLAWLIST_TEST_NATS_URL", "nats://127.0.0.1:4222")


def _reachable(url: str, default_port: int) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def require_redis() -> None:
    if _reachable(REDIS_URL, 6379):
        return
    if IN_CI:
        pytest.fail(f"Redis at {REDIS_URL} is unreachable, and CI=true requires it")
    pytest.skip(f"Redis at {REDIS_URL} is unreachable (start it, or run in CI to require it)")


def require_nats() -> None:
    if _reachable(NATS_URL, 4222):
        return
    if IN_CI:
        pytest.fail(f"NATS at {NATS_URL} is unreachable, and CI=true requires it")
    pytest.skip(f"NATS at {NATS_URL} is unreachable (start it, or run in CI to require it)")
