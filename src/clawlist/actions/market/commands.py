"""Slash commands (stub: being built)."""

from __future__ import annotations

from typing import Any

from clawlist.actions.actor import Actor
from clawlist.actions.services import Services


async def run(svc: Services, actor: Actor, room_id: str, event_id: str, content: dict[str, Any]) -> None:
    return None
