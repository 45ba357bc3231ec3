"""Power levels: who may do what in a room. Pure functions over the room's power-levels content."""

from __future__ import annotations

from typing import Any

OWNER = 100
MODERATOR = 50
MEMBER = 0


def default_power_levels(creator: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The defaults of a new room: the creator is owner (100), moderators 50, members 0."""
    content: dict[str, Any] = {
        "users": {creator: OWNER},
        "users_default": MEMBER,
        "events_default": MEMBER,
        "state_default": MODERATOR,
        "ban": MODERATOR,
        "kick": MODERATOR,
        "redact": MODERATOR,
        "invite": MEMBER,
        "events": {
            "m.room.name": MODERATOR,
            "m.room.topic": MODERATOR,
            "m.room.avatar": MODERATOR,
            "m.room.canonical_alias": MODERATOR,
            "m.room.power_levels": OWNER,
            "m.room.history_visibility": OWNER,
            "m.room.join_rules": OWNER,
            "m.room.tombstone": OWNER,
            "m.room.server_acl": OWNER,
            "m.room.encryption": OWNER,
            "m.space.child": MODERATOR,
            "m.space.parent": MODERATOR,
        },
    }
    if overrides:
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(content.get(key), dict):
                content[key] = {**content[key], **value}
            else:
                content[key] = value
    return content


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return default


def user_level(levels: dict[str, Any], user_id: str) -> int:
    users = levels.get("users")
    if isinstance(users, dict) and user_id in users:
        return _int(users[user_id], 0)
    return _int(levels.get("users_default"), MEMBER)


def action_level(levels: dict[str, Any], action: str) -> int:
    """Level needed for `ban`, `kick`, `redact` or `invite`."""
    default = MEMBER if action == "invite" else MODERATOR
    return _int(levels.get(action), default)


def event_level(levels: dict[str, Any], event_type: str, is_state: bool) -> int:
    events = levels.get("events")
    if isinstance(events, dict) and event_type in events:
        return _int(events[event_type], 0)
    if is_state:
        return _int(levels.get("state_default"), MODERATOR)
    return _int(levels.get("events_default"), MEMBER)


def can_send(levels: dict[str, Any], user_id: str, event_type: str, is_state: bool) -> bool:
    return user_level(levels, user_id) >= event_level(levels, event_type, is_state)


def can_change_power_levels(old: dict[str, Any], new: dict[str, Any], sender: str) -> bool:
    """A sender may not grant or remove levels above their own, nor change peers at their level."""
    mine = user_level(old, sender)
    old_users = old.get("users") if isinstance(old.get("users"), dict) else {}
    new_users = new.get("users") if isinstance(new.get("users"), dict) else {}
    assert isinstance(old_users, dict) and isinstance(new_users, dict)
    for user in set(old_users) | set(new_users):
        before = _int(old_users.get(user), _int(old.get("users_default"), 0))
        after = _int(new_users.get(user), _int(new.get("users_default"), 0))
        if before == after:
            continue
        if after > mine or before > mine:
            return False
        if before == mine and user != sender:
            return False
    for key in ("users_default", "events_default", "state_default", "ban", "kick", "redact", "invite"):
        if key in old or key in new:
            before = _int(old.get(key), 0)
            after = _int(new.get(key), 0)
            if before != after and (before > mine or after > mine):
                return False
    old_events = old.get("events") if isinstance(old.get("events"), dict) else {}
    new_events = new.get("events") if isinstance(new.get("events"), dict) else {}
    assert isinstance(old_events, dict) and isinstance(new_events, dict)
    for etype in set(old_events) | set(new_events):
        before_e = old_events.get(etype)
        after_e = new_events.get(etype)
        if before_e != after_e and (_int(before_e, 0) > mine or _int(after_e, 0) > mine):
            return False
    return True
