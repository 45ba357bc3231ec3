"""Matrix canonical JSON and content hashes."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from clawlist.core.errors import bad_json


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8 (Matrix's canonical JSON).

    Values JSON cannot carry faithfully (integers beyond 64 bits) are a client error, not a crash.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise bad_json(f"content cannot be encoded as canonical JSON: {exc}") from exc


def unpadded_b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compute_event_id(event: dict[str, Any]) -> str:
    """`$` + unpadded base64url of SHA-256 over the canonical JSON of the event without its id.

    The hashed form carries the room-local `depth`, so two identical sends in the same millisecond
    still get distinct ids.
    """
    hashed = {k: v for k, v in event.items() if k not in ("event_id", "unsigned")}
    return "$" + unpadded_b64url(hashlib.sha256(canonical_json(hashed)).digest())
