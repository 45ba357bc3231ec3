"""Rows of the market's tables as plain dicts, the shapes exports and dispute transcripts hold."""

from __future__ import annotations

from typing import Any

import orjson

from clawlist.storage.event_store import event_from_row
from clawlist.storage.tables import deal_transitions, deals, disputes, listings, offers


def listing_dict(row: Any) -> dict[str, Any]:
    m = row._mapping
    out = {str(c.name): m[c.name] for c in listings.columns}
    for key in ("tags", "images"):
        try:
            out[key] = orjson.loads(out[key]) if out[key] else []
        except orjson.JSONDecodeError:
            out[key] = []
    return out


def offer_dict(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {str(c.name): m[c.name] for c in offers.columns}


def deal_row_dict(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {str(c.name): m[c.name] for c in deals.columns}


def dispute_dict(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {str(c.name): m[c.name] for c in disputes.columns}


def transition_dict(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {str(c.name): m[c.name] for c in deal_transitions.columns}


def event_dict(row: Any) -> dict[str, Any]:
    """An event for an export or a transcript: ids, sender, time, body and structured content.
    A redacted event shows its redacted content and who redacted it."""
    e = event_from_row(row)
    body = e.content.get("body")
    out: dict[str, Any] = {
        "event_id": e.event_id,
        "position": e.position,
        "room_id": e.room_id,
        "type": e.type,
        "sender": e.sender,
        "origin_server_ts": e.origin_server_ts,
        "msgtype": e.content.get("msgtype"),
        "body": body if isinstance(body, str) else None,
        "content": e.content,
    }
    if e.state_key is not None:
        out["state_key"] = e.state_key
    if e.redacted_by:
        out["redacted_by"] = e.redacted_by
    return out


__all__ = ["deal_row_dict", "dispute_dict", "event_dict", "listing_dict", "offer_dict", "transition_dict"]
