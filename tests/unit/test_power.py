"""Power levels: pure rules over a room's m.room.power_levels content."""

from __future__ import annotations

import copy

from hypothesis import given
from hypothesis import strategies as st

from clawlist.core import power

OWNER = "@owner:test.local"
MOD = "@mod:test.local"
MOD2 = "@mod2:test.local"
MEMBER = "@member:test.local"


def levels() -> dict:
    content = power.default_power_levels(OWNER)
    content["users"][MOD] = power.MODERATOR
    content["users"][MOD2] = power.MODERATOR
    return content


def test_default_levels_owner_moderator_member() -> None:
    assert (power.OWNER, power.MODERATOR, power.MEMBER) == (100, 50, 0)
    content = levels()
    assert power.user_level(content, OWNER) == 100
    assert power.user_level(content, MOD) == 50
    assert power.user_level(content, MEMBER) == 0
    assert content["users_default"] == 0
    assert content["state_default"] == 50
    assert content["events_default"] == 0


def test_default_action_levels() -> None:
    content = levels()
    assert power.action_level(content, "kick") == 50
    assert power.action_level(content, "ban") == 50
    assert power.action_level(content, "redact") == 50
    assert power.action_level(content, "invite") == 0


def test_action_levels_fall_back_to_matrix_defaults_when_missing() -> None:
    assert power.action_level({}, "kick") == 50
    assert power.action_level({}, "ban") == 50
    assert power.action_level({}, "redact") == 50
    assert power.action_level({}, "invite") == 0
    assert power.action_level({"kick": 75}, "kick") == 75


def test_user_level_without_users_uses_users_default() -> None:
    assert power.user_level({}, MEMBER) == 0
    assert power.user_level({"users_default": 10}, MEMBER) == 10
    assert power.user_level({"users": {MEMBER: "20"}}, MEMBER) == 20


def test_booleans_are_not_levels() -> None:
    assert power.user_level({"users": {MEMBER: True}}, MEMBER) == 0
    assert power.action_level({"kick": True}, "kick") == 50


def test_overrides_merge_nested_dicts() -> None:
    content = power.default_power_levels(OWNER, {"events": {"m.room.name": 0}, "kick": 100})
    assert content["events"]["m.room.name"] == 0
    assert content["events"]["m.room.power_levels"] == 100
    assert content["kick"] == 100
    assert content["users"] == {OWNER: 100}


def test_can_send_messages_and_state() -> None:
    content = levels()
    assert power.can_send(content, MEMBER, "m.room.message", is_state=False)
    assert power.can_send(content, MEMBER, "m.reaction", is_state=False)
    assert not power.can_send(content, MEMBER, "m.room.name", is_state=True)
    assert not power.can_send(content, MEMBER, "m.room.topic", is_state=True)
    assert not power.can_send(content, MEMBER, "com.example.state", is_state=True)
    assert power.can_send(content, MOD, "m.room.name", is_state=True)
    assert power.can_send(content, MOD, "m.room.topic", is_state=True)
    assert power.can_send(content, MOD, "com.example.state", is_state=True)
    assert not power.can_send(content, MOD, "m.room.power_levels", is_state=True)
    assert not power.can_send(content, MOD, "m.room.join_rules", is_state=True)
    assert power.can_send(content, OWNER, "m.room.power_levels", is_state=True)


def test_event_level_specific_overrides_default() -> None:
    content = levels()
    content["events"]["m.room.message"] = 50
    assert not power.can_send(content, MEMBER, "m.room.message", is_state=False)
    assert power.event_level(content, "m.room.message", False) == 50
    assert power.event_level(content, "x.custom", False) == 0
    assert power.event_level(content, "x.custom", True) == 50


def test_owner_may_promote_to_moderator() -> None:
    old = levels()
    new = copy.deepcopy(old)
    new["users"][MEMBER] = 50
    assert power.can_change_power_levels(old, new, OWNER)


def test_cannot_grant_above_own_level() -> None:
    old = levels()
    new = copy.deepcopy(old)
    new["users"][MEMBER] = 51
    assert not power.can_change_power_levels(old, new, MOD)
    new["users"][MEMBER] = 50
    assert power.can_change_power_levels(old, new, MOD)


def test_cannot_raise_own_level() -> None:
    old = levels()
    new = copy.deepcopy(old)
    new["users"][MOD] = 100
    assert not power.can_change_power_levels(old, new, MOD)


def test_may_demote_oneself() -> None:
    old = levels()
    new = copy.deepcopy(old)
    new["users"][MOD] = 0
    assert power.can_change_power_levels(old, new, MOD)
    del new["users"][MOD]
    assert power.can_change_power_levels(old, new, MOD)


def test_cannot_demote_peer_or_superior() -> None:
    old = levels()
    new = copy.deepcopy(old)
    new["users"][MOD2] = 0
    assert not power.can_change_power_levels(old, new, MOD)
    new = copy.deepcopy(old)
    new["users"][OWNER] = 0
    assert not power.can_change_power_levels(old, new, MOD)
    new = copy.deepcopy(old)
    del new["users"][MOD2]
    assert not power.can_change_power_levels(old, new, MOD)
    # the owner may demote a moderator
    assert power.can_change_power_levels(old, new, OWNER)


def test_owner_cannot_demote_another_owner() -> None:
    old = levels()
    old["users"][MOD] = 100
    new = copy.deepcopy(old)
    new["users"][MOD] = 50
    assert not power.can_change_power_levels(old, new, OWNER)


def test_cannot_change_action_levels_above_own() -> None:
    old = levels()
    new = copy.deepcopy(old)
    new["kick"] = 100
    assert not power.can_change_power_levels(old, new, MOD)
    assert power.can_change_power_levels(old, new, OWNER)
    new = copy.deepcopy(old)
    new["kick"] = 40
    assert power.can_change_power_levels(old, new, MOD)


def test_cannot_change_event_levels_above_own() -> None:
    old = levels()
    new = copy.deepcopy(old)
    new["events"]["m.room.power_levels"] = 50
    assert not power.can_change_power_levels(old, new, MOD)
    new = copy.deepcopy(old)
    new["events"]["m.room.name"] = 0
    assert power.can_change_power_levels(old, new, MOD)
    new["events"]["x.custom"] = 60
    assert not power.can_change_power_levels(old, new, MOD)


def test_unchanged_content_is_always_allowed() -> None:
    old = levels()
    assert power.can_change_power_levels(old, copy.deepcopy(old), MEMBER)


@given(st.integers(min_value=0, max_value=100), st.integers(min_value=-10, max_value=200))
def test_never_grant_more_than_own_level(mine: int, granted: int) -> None:
    old = {"users": {MOD: mine}, "users_default": 0}
    new = {"users": {MOD: mine, MEMBER: granted}, "users_default": 0}
    allowed = power.can_change_power_levels(old, new, MOD)
    if granted > mine:
        assert not allowed
    if granted == 0:
        assert allowed
