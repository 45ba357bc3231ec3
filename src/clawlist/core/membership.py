"""Membership transitions: who may join, leave, invite, kick, ban and unban. Pure rules."""

from __future__ import annotations

from typing import Any

from clawlist.core import power
from clawlist.core.errors import ClawlistError, forbidden


def check_transition(
    *,
    sender: str,
    target: str,
    sender_membership: str | None,
    target_membership: str | None,
    new_membership: str,
    join_rule: str,
    levels: dict[str, Any],
) -> None:
    """Raise ClawlistError when `sender` may not set `target`'s membership to `new_membership`."""
    if new_membership == "join":
        if sender != target:
            raise forbidden("one can only join a room as oneself")
        if target_membership == "ban":
            raise forbidden("you are banned from this room")
        if target_membership in ("join", "invite"):
            return
        if join_rule == "public":
            return
        raise forbidden("this room is invite-only")
    if new_membership == "leave" and sender == target:
        if target_membership in ("join", "invite", "knock"):
            return
        if target_membership == "ban":
            raise forbidden("you are banned from this room")
        raise forbidden("you are not in this room")
    if sender_membership != "join":
        raise forbidden("you are not a member of this room")
    sender_level = power.user_level(levels, sender)
    target_level = power.user_level(levels, target)
    if new_membership == "invite":
        if target_membership == "ban":
            raise forbidden(f"{target} is banned from this room")
        if target_membership == "join":
            raise ClawlistError(403, "M_FORBIDDEN", f"{target} is already in the room")
        if sender_level < power.action_level(levels, "invite"):
            raise forbidden("your power level is too low to invite")
        return
    if new_membership == "leave":  # kick or unban
        if target_membership == "ban":
            if sender_level < power.action_level(levels, "ban"):
                raise forbidden("your power level is too low to unban")
            return
        if target_membership not in ("join", "invite", "knock"):
            raise forbidden(f"{target} is not in the room")
        if sender_level < power.action_level(levels, "kick") or target_level >= sender_level:
            raise forbidden("your power level is too low to kick this user")
        return
    if new_membership == "ban":
        if sender_level < power.action_level(levels, "ban") or target_level >= sender_level:
            raise forbidden("your power level is too low to ban this user")
        return
    raise forbidden(f"membership {new_membership!r} cannot be set this way")


#: Keys of a member event's content a user may set on their own membership (profile and flags).
MEMBER_EXTRA_KEYS = ("displayname", "avatar_url", "is_direct", "reason")


def carried_into_join(previous: dict[str, Any] | None) -> dict[str, Any]:
    """What a join copies from the invite it accepts: `is_direct`, so the joiner's own member event
    still says the room is a DM (clients decide "is this a DM" from it when `m.direct` is empty)."""
    if previous and previous.get("membership") == "invite" and previous.get("is_direct") is True:
        return {"is_direct": True}
    return {}


def membership_for_state(sender: str, target: str, target_membership: str | None, requested: object) -> str:
    """The membership action a `PUT /state/m.room.member/{target}` asks for: one of join, leave,
    invite, ban, kick, unban (knocking has no endpoint here)."""
    if requested not in ("join", "leave", "invite", "ban"):
        raise ClawlistError(400, "M_BAD_JSON", "membership must be join, leave, invite or ban")
    if requested == "leave" and sender != target:
        return "unban" if target_membership == "ban" else "kick"
    return str(requested)
