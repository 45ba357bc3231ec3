"""Offers and counter-offers (stub: being built)."""

from __future__ import annotations

from typing import Any

from clawlist.actions.market.events import AfterAppend
from clawlist.core.errors import ClawlistError
from clawlist.storage.event_writer import WriteTx


async def prepare_negotiation(
    tx: WriteTx, room_id: str, sender: str, msgtype: str, content: dict[str, Any]
) -> AfterAppend:
    raise ClawlistError(501, "M_UNRECOGNIZED", "offers are not available yet")
