"""Event types and the shape of content this server accepts."""

from __future__ import annotations

from typing import Any

from clawlist.core.errors import ClawlistError, bad_request

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
HISTORY_VISIBILITY = "m.room.history_visibility"
NAME = "m.room.name"
TOPIC = "m.room.topic"
CANONICAL_ALIAS = "m.room.canonical_alias"
GUEST_ACCESS = "m.room.guest_access"
ENCRYPTION = "m.room.encryption"
AVATAR = "m.room.avatar"
MESSAGE = "m.room.message"
REACTION = "m.reaction"
REDACTION = "m.room.redaction"
SPACE_CHILD = "m.space.child"
SPACE_PARENT = "m.space.parent"
ROOM_METADATA = "clawlist.room.metadata"

SPACE_TYPE = "m.space"

MEMBERSHIPS = ("join", "leave", "invite", "ban", "knock")

#: msgtypes a client may send in an m.room.message; our own `clawlist.*` types are allowed too.
STANDARD_MSGTYPES = frozenset(
    {"m.text", "m.notice", "m.emote", "m.image", "m.file", "m.audio", "m.video", "m.location"}
)


def validate_event_type(event_type: str) -> str:
    if not isinstance(event_type, str) or not event_type or len(event_type) > 255 or "\x00" in event_type:
        raise bad_request("event type must be a string of 1-255 characters without NUL")
    return event_type


def validate_state_key(state_key: str) -> str:
    if not isinstance(state_key, str) or len(state_key) > 255 or "\x00" in state_key:
        raise bad_request("state_key must be a string of at most 255 characters without NUL")
    return state_key


def refuse_encryption(event_type: str) -> None:
    """End-to-end encryption is not offered: a room can never be switched to encrypted, because
    clients would then encrypt for keys this server never distributes and nobody could read."""
    if event_type == ENCRYPTION:
        raise ClawlistError(403, "M_FORBIDDEN", "end-to-end encryption is not supported by this server")


JOIN_RULES_ALLOWED = ("public", "invite", "knock")


def validate_state_content(event_type: str, content: dict[str, Any]) -> None:
    """The shape of state content the rules read (names, topics, join rules, power levels)."""
    if event_type == NAME and not isinstance(content.get("name", ""), str):
        raise bad_request("m.room.name needs a string 'name'", "M_BAD_JSON")
    if event_type == TOPIC and not isinstance(content.get("topic", ""), str):
        raise bad_request("m.room.topic needs a string 'topic'", "M_BAD_JSON")
    if event_type == JOIN_RULES and content.get("join_rule") not in JOIN_RULES_ALLOWED:
        raise bad_request("join_rule must be public, invite or knock", "M_BAD_JSON")
    if event_type == POWER_LEVELS:
        validate_power_levels(content)


def validate_power_levels(content: dict[str, Any]) -> None:
    for key in ("users", "events", "notifications"):
        if key in content and not isinstance(content[key], dict):
            raise bad_request(f"power levels '{key}' must be an object", "M_BAD_JSON")
        for value in (content.get(key) or {}).values():
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad_request("power levels must be integers", "M_BAD_JSON")
    for key in ("users_default", "events_default", "state_default", "ban", "kick", "redact", "invite"):
        value = content.get(key)
        if key in content and (not isinstance(value, int) or isinstance(value, bool)):
            raise bad_request(f"power level '{key}' must be an integer", "M_BAD_JSON")


def validate_message_content(content: dict[str, Any]) -> None:
    msgtype = content.get("msgtype")
    if not isinstance(msgtype, str) or not msgtype:
        raise bad_request("message content needs a string 'msgtype'", "M_BAD_JSON")
    if msgtype not in STANDARD_MSGTYPES and not msgtype.startswith("clawlist."):
        raise bad_request(f"unknown msgtype {msgtype!r}", "M_BAD_JSON")
    body = content.get("body")
    if not isinstance(body, str):
        raise bad_request("message content needs a string 'body'", "M_BAD_JSON")


def relation_of(content: dict[str, Any]) -> tuple[str | None, str | None]:
    """(target event id, relation type) of an event's content, if any. Replies count as `m.in_reply_to`."""
    relates = content.get("m.relates_to")
    if not isinstance(relates, dict):
        return None, None
    target = relates.get("event_id")
    rel_type = relates.get("rel_type")
    if isinstance(target, str) and isinstance(rel_type, str):
        return target, rel_type
    reply = relates.get("m.in_reply_to")
    if isinstance(reply, dict) and isinstance(reply.get("event_id"), str):
        return str(reply["event_id"]), "m.in_reply_to"
    return None, None
