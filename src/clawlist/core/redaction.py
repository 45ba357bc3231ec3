"""Matrix redaction rules (room versions 10 and 11): what survives when an event is redacted."""

from __future__ import annotations

from typing import Any

_KEEP_TOP = {
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
}

_KEEP_CONTENT: dict[str, set[str]] = {
    "m.room.member": {"membership", "join_authorised_via_users_server"},
    "m.room.join_rules": {"join_rule", "allow"},
    "m.room.power_levels": {
        "ban",
        "events",
        "events_default",
        "invite",
        "kick",
        "redact",
        "state_default",
        "users",
        "users_default",
    },
    "m.room.history_visibility": {"history_visibility"},
    "m.room.redaction": {"redacts"},
}


def redact_content(event_type: str, content: dict[str, Any]) -> dict[str, Any]:
    if event_type == "m.room.create":
        return dict(content)
    keep = _KEEP_CONTENT.get(event_type, set())
    return {k: v for k, v in content.items() if k in keep}


def redact_event(event: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in event.items() if k in _KEEP_TOP}
    out["content"] = redact_content(str(event.get("type")), dict(event.get("content") or {}))
    return out
