"""Admin commands that work with the server down: they open the database through the actions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from clawlist.actions import auth, devices, registration
from clawlist.actions.bootstrap import system_user_id
from clawlist.actions.services import Services, build_services, start_services, stop_services
from clawlist.settings import Settings

T = TypeVar("T")


def make_settings(data_dir: Path | None = None, **more: Any) -> Settings:
    values: dict[str, Any] = {k: v for k, v in more.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)


async def with_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    services = build_services(settings)
    await start_services(services)
    try:
        return await work(services)
    finally:
        await stop_services(services)


async def migrate(settings: Settings) -> tuple[str | None, str | None]:
    from clawlist.actions.services import migrate_database

    return await migrate_database(settings)


async def mint_agent_token(settings: Settings, user_id: str, label: str) -> auth.TokenPair:
    return await with_services(settings, lambda svc: auth.mint_static_token(svc, user_id, label=label))


async def mint_login_token(settings: Settings, user_id: str) -> auth.Challenge:
    return await with_services(settings, lambda svc: devices.mint_login_token(svc, user_id))


async def create_registration_token(
    settings: Settings, uses: int | None, expires_in: int | None
) -> registration.NewRegistrationToken:
    async def work(svc: Services) -> registration.NewRegistrationToken:
        return await registration.create_token(
            svc, created_by=system_user_id(svc), uses_allowed=uses, expires_in_s=expires_in
        )

    return await with_services(settings, work)
