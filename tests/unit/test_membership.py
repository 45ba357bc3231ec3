"""Membership transitions (core.membership.check_transition)."""

from __future__ import annotations

from typing import Any

import pytest

from clawlist.core import power
from clawlist.core.errors import ClawlistError
from clawlist.core.membership import check_transition

OWNER = "@owner:test.local"
MOD = "@mod:test.local"
MOD2 = "@mod2:test.local"
ALICE = "@alice:test.local"
BOB = "@bob:test.local"


def levels() -> dict[str, Any]:
    content = power.default_power_levels(OWNER)
    content["users"][MOD] = 50
    content["users"][MOD2] = 50
    return content


def ok(**kwargs: Any) -> None:
    args: dict[str, Any] = {"join_rule": "invite", "levels": levels()}
    args.update(kwargs)
    check_transition(**args)


def refused(**kwargs: Any) -> ClawlistError:
    with pytest.raises(ClawlistError) as info:
        ok(**kwargs)
    assert info.value.status == 403
    assert info.value.errcode == "M_FORBIDDEN"
    return info.value


def me(user: str, current: str | None, new: str, **kw: Any) -> dict[str, Any]:
    return {
        "sender": user,
        "target": user,
        "sender_membership": current,
        "target_membership": current,
        "new_membership": new,
        **kw,
    }


def act(sender: str, sender_m: str | None, target: str, target_m: str | None, new: str, **kw: Any) -> dict:
    return {
        "sender": sender,
        "target": target,
        "sender_membership": sender_m,
        "target_membership": target_m,
        "new_membership": new,
        **kw,
    }


# joining


def test_join_public_room() -> None:
    ok(**me(ALICE, None, "join", join_rule="public"))
    ok(**me(ALICE, "leave", "join", join_rule="public"))


def test_join_invite_only_room_needs_invite() -> None:
    refused(**me(ALICE, None, "join", join_rule="invite"))
    refused(**me(ALICE, "leave", "join", join_rule="invite"))
    refused(**me(ALICE, None, "join", join_rule="knock"))
    ok(**me(ALICE, "invite", "join", join_rule="invite"))


def test_join_when_already_joined_is_a_no_op() -> None:
    ok(**me(ALICE, "join", "join", join_rule="invite"))


def test_banned_cannot_join_even_public_or_invited() -> None:
    err = refused(**me(ALICE, "ban", "join", join_rule="public"))
    assert "banned" in err.message
    refused(**me(ALICE, "ban", "join", join_rule="invite"))


def test_cannot_join_someone_else() -> None:
    refused(**act(OWNER, "join", ALICE, None, "join", join_rule="public"))


# leaving


@pytest.mark.parametrize("current", ["join", "invite", "knock"])
def test_leave_from_any_presence(current: str) -> None:
    ok(**me(ALICE, current, "leave"))


def test_leave_when_not_in_room_refused() -> None:
    refused(**me(ALICE, None, "leave"))
    refused(**me(ALICE, "leave", "leave"))


def test_banned_cannot_leave_to_lift_ban() -> None:
    refused(**me(ALICE, "ban", "leave"))


# inviting


def test_member_may_invite_by_default() -> None:
    ok(**act(ALICE, "join", BOB, None, "invite"))
    ok(**act(ALICE, "join", BOB, "leave", "invite"))


def test_invite_needs_invite_level() -> None:
    content = levels()
    content["invite"] = 50
    refused(**act(ALICE, "join", BOB, None, "invite", levels=content))
    ok(**act(MOD, "join", BOB, None, "invite", levels=content))


def test_invite_needs_sender_joined() -> None:
    refused(**act(ALICE, None, BOB, None, "invite"))
    refused(**act(ALICE, "invite", BOB, None, "invite"))
    refused(**act(ALICE, "leave", BOB, None, "invite"))


def test_cannot_invite_joined_or_banned() -> None:
    refused(**act(ALICE, "join", BOB, "join", "invite"))
    refused(**act(OWNER, "join", BOB, "ban", "invite"))


# kicking


def test_kick_needs_kick_level() -> None:
    refused(**act(ALICE, "join", BOB, "join", "leave"))
    ok(**act(MOD, "join", BOB, "join", "leave"))
    ok(**act(OWNER, "join", BOB, "join", "leave"))


def test_kick_needs_higher_level_than_target() -> None:
    refused(**act(MOD, "join", MOD2, "join", "leave"))
    refused(**act(MOD, "join", OWNER, "join", "leave"))
    refused(**act(ALICE, "join", OWNER, "join", "leave"))
    ok(**act(OWNER, "join", MOD, "join", "leave"))


def test_kick_may_revoke_an_invite() -> None:
    ok(**act(MOD, "join", BOB, "invite", "leave"))


def test_kick_someone_not_in_room_refused() -> None:
    refused(**act(OWNER, "join", BOB, None, "leave"))
    refused(**act(OWNER, "join", BOB, "leave", "leave"))


def test_kick_needs_sender_joined() -> None:
    refused(**act(OWNER, "leave", BOB, "join", "leave"))


def test_kick_level_is_configurable() -> None:
    content = levels()
    content["kick"] = 10
    content["users"][ALICE] = 10
    ok(**act(ALICE, "join", BOB, "join", "leave", levels=content))
    # still needs a higher level than the target, even at the kick level
    refused(**act(ALICE, "join", MOD, "join", "leave", levels=content))
    content["kick"] = 0
    refused(**act(BOB, "join", "@carol:test.local", "join", "leave", levels=content))


# banning


def test_ban_needs_ban_level_and_higher_than_target() -> None:
    refused(**act(ALICE, "join", BOB, "join", "ban"))
    ok(**act(MOD, "join", BOB, "join", "ban"))
    ok(**act(MOD, "join", BOB, None, "ban"))
    ok(**act(MOD, "join", BOB, "leave", "ban"))
    refused(**act(MOD, "join", MOD2, "join", "ban"))
    refused(**act(MOD, "join", OWNER, "join", "ban"))
    ok(**act(OWNER, "join", MOD, "join", "ban"))


def test_ban_needs_sender_joined() -> None:
    refused(**act(OWNER, None, BOB, "join", "ban"))


# unbanning


def test_unban_needs_ban_level() -> None:
    refused(**act(ALICE, "join", BOB, "ban", "leave"))
    ok(**act(MOD, "join", BOB, "ban", "leave"))
    ok(**act(OWNER, "join", BOB, "ban", "leave"))


def test_unban_needs_sender_joined() -> None:
    refused(**act(OWNER, "leave", BOB, "ban", "leave"))


# other


def test_cannot_set_knock_or_unknown_for_someone_else() -> None:
    refused(**act(OWNER, "join", BOB, None, "knock"))
    refused(**act(OWNER, "join", BOB, None, "bogus"))
