"""A new room's first events, in the order the Matrix spec (createRoom, v1.11) fixes. Pure.

1. `m.room.create` (with the client's `creation_content`)
2. the creator's `m.room.member` join
3. `m.room.power_levels` (defaults, or an `initial_state` power-levels event, then the override)
4. `m.room.canonical_alias`, when an alias was asked for
5. the preset's `m.room.join_rules`, `m.room.history_visibility`, `m.room.guest_access`
   (each skipped when `initial_state` sets it: initial state takes precedence over the preset)
6. our own `clawlist.room.metadata` (native rooms only), then the `initial_state` events
7. `m.room.name`, `m.room.topic`
8. the invites (`is_direct` on each when the room is a DM)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clawlist.core import events as ev
from clawlist.core import power
from clawlist.core.errors import ClawlistError, bad_request

PRESETS = ("private_chat", "trusted_private_chat", "public_chat")
ROOM_VERSIONS = ("10", "11")
DEFAULT_ROOM_VERSION = "10"
MAX_ROOM_TYPE_LENGTH = 64
MAX_INITIAL_STATE = 100

#: What each preset sets: join rule, history visibility, guest access.
PRESET_STATE: dict[str, dict[str, str]] = {
    "private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "trusted_private_chat": {
        "join_rule": "invite",
        "history_visibility": "shared",
        "guest_access": "can_join",
    },
    "public_chat": {"join_rule": "public", "history_visibility": "shared", "guest_access": "forbidden"},
}
HISTORY_VISIBILITIES = ("world_readable", "shared", "invited", "joined")


@dataclass(frozen=True)
class InitialEvent:
    type: str
    content: dict[str, Any]
    state_key: str = ""


@dataclass
class RoomPlan:
    """Everything createRoom decides, already resolved (display names looked up, ids checked)."""

    creator: str
    creator_member: dict[str, Any]  # the creator's join content (membership, displayname, ...)
    preset: str
    room_version: str = DEFAULT_ROOM_VERSION
    room_type: str | None = None
    creation_content: dict[str, Any] = field(default_factory=dict)
    power_override: dict[str, Any] | None = None
    alias: str | None = None
    join_rule: str | None = None  # overrides the preset's
    history_visibility: str | None = None  # overrides the preset's
    metadata: dict[str, Any] | None = None
    initial_state: list[dict[str, Any]] = field(default_factory=list)
    name: str | None = None
    topic: str | None = None
    invites: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (user id, member content)
    is_direct: bool = False


def choose_preset(preset: str | None, is_public: bool) -> str:
    """The client's preset, or the default for the room's directory visibility."""
    if preset is None:
        return "public_chat" if is_public else "private_chat"
    if preset not in PRESETS:
        raise bad_request(f"preset must be one of {', '.join(PRESETS)}")
    return preset


def check_room_version(version: object) -> str:
    if version is None:
        return DEFAULT_ROOM_VERSION
    if version not in ROOM_VERSIONS:
        raise ClawlistError(
            400, "M_UNSUPPORTED_ROOM_VERSION", f"room versions {' and '.join(ROOM_VERSIONS)} are supported"
        )
    return str(version)


def check_creation_content(content: object) -> dict[str, Any]:
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise bad_request("creation_content must be an object", "M_BAD_JSON")
    room_type = content.get("type")
    if room_type is not None and (
        not isinstance(room_type, str) or not room_type or len(room_type) > MAX_ROOM_TYPE_LENGTH
    ):
        raise bad_request(f"creation_content.type must be a string of 1-{MAX_ROOM_TYPE_LENGTH} characters")
    if "m.federate" in content and not isinstance(content["m.federate"], bool):
        raise bad_request("creation_content.m.federate must be true or false", "M_BAD_JSON")
    return dict(content)


def check_initial_state(items: object) -> list[dict[str, Any]]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise bad_request("initial_state must be a list", "M_BAD_JSON")
    if len(items) > MAX_INITIAL_STATE:
        raise bad_request(f"at most {MAX_INITIAL_STATE} initial_state events")
    out = []
    for item in items:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("type"), str)
            or not isinstance(item.get("content"), dict)
        ):
            raise bad_request(
                "initial_state items need a string 'type' and an object 'content'", "M_BAD_JSON"
            )
        state_key = item.get("state_key", "")
        if not isinstance(state_key, str):
            raise bad_request("initial_state state_key must be a string", "M_BAD_JSON")
        event_type = ev.validate_event_type(item["type"])
        ev.validate_state_key(state_key)
        if event_type == ev.MEMBER:
            raise bad_request("initial_state may not contain membership events; use invite")
        if event_type == ev.CREATE:
            raise bad_request("initial_state may not contain m.room.create; use creation_content")
        ev.refuse_encryption(event_type)
        ev.validate_state_content(event_type, item["content"])
        out.append({"type": event_type, "state_key": state_key, "content": item["content"]})
    return out


def check_power_override(override: object) -> dict[str, Any] | None:
    if override is None:
        return None
    if not isinstance(override, dict):
        raise bad_request("power_level_content_override must be an object", "M_BAD_JSON")
    ev.validate_power_levels(override)
    return dict(override)


def power_levels(plan: RoomPlan, from_initial_state: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults (the creator 100; with `trusted_private_chat` the invitees too), or the power levels
    given in `initial_state`, then the override applied on top: its objects (`users`, `events`)
    are merged key by key, so an override cannot silently drop the creator's own level."""
    if from_initial_state is not None:
        levels = dict(from_initial_state)
    else:
        levels = power.default_power_levels(plan.creator)
        if plan.preset == "trusted_private_chat":
            for user_id, _content in plan.invites:
                levels["users"][user_id] = power.OWNER
    for key, value in (plan.power_override or {}).items():
        if isinstance(value, dict) and isinstance(levels.get(key), dict):
            levels[key] = {**levels[key], **value}
        else:
            levels[key] = value
    return levels


def initial_events(plan: RoomPlan) -> list[InitialEvent]:
    """The room's first events, in the spec's order."""
    initial = {(i["type"], i["state_key"]): i["content"] for i in plan.initial_state}
    create: dict[str, Any] = {
        k: v for k, v in plan.creation_content.items() if k not in ("creator", "room_version")
    }
    create["room_version"] = plan.room_version
    if plan.room_version == "10":
        create["creator"] = plan.creator
    if plan.room_type is not None:
        create["type"] = plan.room_type
    out = [
        InitialEvent(ev.CREATE, create),
        InitialEvent(ev.MEMBER, dict(plan.creator_member), plan.creator),
        InitialEvent(ev.POWER_LEVELS, power_levels(plan, initial.get((ev.POWER_LEVELS, "")))),
    ]
    if plan.alias is not None:
        out.append(InitialEvent(ev.CANONICAL_ALIAS, {"alias": plan.alias}))
    preset = PRESET_STATE[plan.preset]
    join_rule = plan.join_rule or preset["join_rule"]
    visibility = plan.history_visibility or preset["history_visibility"]
    for event_type, content in (
        (ev.JOIN_RULES, {"join_rule": join_rule}),
        (ev.HISTORY_VISIBILITY, {"history_visibility": visibility}),
        (ev.GUEST_ACCESS, {"guest_access": preset["guest_access"]}),
    ):
        if (event_type, "") not in initial:
            out.append(InitialEvent(event_type, content))
    if plan.metadata is not None:
        out.append(InitialEvent(ev.ROOM_METADATA, plan.metadata))
    for item in plan.initial_state:
        if (item["type"], item["state_key"]) == (ev.POWER_LEVELS, ""):
            continue  # already sent, in third place
        out.append(InitialEvent(item["type"], item["content"], item["state_key"]))
    if plan.name is not None:
        out.append(InitialEvent(ev.NAME, {"name": plan.name}))
    if plan.topic is not None:
        out.append(InitialEvent(ev.TOPIC, {"topic": plan.topic}))
    for user_id, content in plan.invites:
        member: dict[str, Any] = dict(content)
        if plan.is_direct:
            member["is_direct"] = True
        out.append(InitialEvent(ev.MEMBER, member, user_id))
    return out
