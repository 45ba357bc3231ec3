"""Matrix redaction rules (room versions 10 and 11): what survives when an event is redacted."""

from __future__ import annotations

from typing import Any

_KEEP_TOP_V11 = {
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

# Room version 11 stopped keeping these.
_KEEP_TOP_V10 = _KEEP_TOP_V11 | {"origin", "membership", "prev_state"}

_KEEP_CONTENT_V10: dict[str, set[str]] = {
    "m.room.member": {"membership", "join_authorised_via_users_server"},
    "m.room.create": {"creator"},
    "m.room.join_rules": {"join_rule", "allow"},
    "m.room.power_levels": {
        "ban",
        "events",
        "events_default",
        "kick",
        "redact",
        "state_default",
        "users",
        "users_default",
    },
    "m.room.history_visibility": {"history_visibility"},
}

_KEEP_CONTENT_V11: dict[str, set[str]] = {
    **_KEEP_CONTENT_V10,
    "m.room.power_levels": _KEEP_CONTENT_V10["m.room.power_levels"] | {"invite"},
    "m.room.redaction": {"redacts"},
}


def redact_content(event_type: str, content: dict[str, Any], room_version: str = "11") -> dict[str, Any]:
    """The content that survives redaction. Versions before 11 follow the v10 rules."""
    v11 = room_version == "11"
    if event_type == "m.room.create" and v11:
        return dict(content)
    keep = (_KEEP_CONTENT_V11 if v11 else _KEEP_CONTENT_V10).get(event_type, set())
    out = {k: v for k, v in content.items() if k in keep}
    if v11 and event_type == "m.room.member":
        invite = content.get("third_party_invite")
        if isinstance(invite, dict) and "signed" in invite:
            out["third_party_invite"] = {"signed": invite["signed"]}
    return out


def redact_event(event: dict[str, Any], room_version: str = "11") -> dict[str, Any]:
    keep = _KEEP_TOP_V11 if room_version == "11" else _KEEP_TOP_V10
    out = {k: v for k, v in event.items() if k in keep}
    out["content"] = redact_content(str(event.get("type")), dict(event.get("content") or {}), room_version)
    return out
