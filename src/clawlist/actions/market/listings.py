"""Listings (stub: being built)."""

from __future__ import annotations

from typing import Any

from clawlist.actions.market.events import AfterAppend
from clawlist.core.errors import ClawlistError
from clawlist.storage.event_store import StoredEvent
from clawlist.storage.event_writer import WriteTx


async def prepare_listing(tx: WriteTx, room_id: str, sender: str, content: dict[str, Any]) -> AfterAppend:
    raise ClawlistError(501, "M_UNRECOGNIZED", "listings are not available yet")


async def on_listing_redacted(tx: WriteTx, target: StoredEvent, redactor: str) -> None:
    return None
