"""createRoom's pure rules (core.presets) and the membership helpers the Matrix façade uses."""

from __future__ import annotations

import pytest

from clawlist.core import membership, presets
from clawlist.core.errors import ClawlistError

ALICE, BOB = "@alice:s", "@bob:s"


def plan(**kw: object) -> presets.RoomPlan:
    values: dict[str, object] = {
        "creator": ALICE,
        "creator_member": {"membership": "join"},
        "preset": "private_chat",
    }
    values.update(kw)
    return presets.RoomPlan(**values)  # type: ignore[arg-type]


def kinds(p: presets.RoomPlan) -> list[tuple[str, str]]:
    return [(e.type, e.state_key) for e in presets.initial_events(p)]


def test_spec_order() -> None:
    p = plan(
        alias="#a:s",
        initial_state=[{"type": "x.y", "state_key": "", "content": {}}],
        name="n",
        topic="t",
        invites=[(BOB, {"membership": "invite"})],
        metadata={"type": "dm"},
    )
    assert kinds(p) == [
        ("m.room.create", ""),
        ("m.room.member", ALICE),
        ("m.room.power_levels", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("clawlist.room.metadata", ""),
        ("x.y", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", BOB),
    ]


@pytest.mark.parametrize(
    ("preset", "rule", "guest"),
    [
        ("private_chat", "invite", "can_join"),
        ("trusted_private_chat", "invite", "can_join"),
        ("public_chat", "public", "forbidden"),
    ],
)
def test_preset_state(preset: str, rule: str, guest: str) -> None:
    events = {e.type: e.content for e in presets.initial_events(plan(preset=preset))}
    assert events["m.room.join_rules"] == {"join_rule": rule}
    assert events["m.room.history_visibility"] == {"history_visibility": "shared"}
    assert events["m.room.guest_access"] == {"guest_access": guest}


def test_initial_state_replaces_preset_events_and_power_levels() -> None:
    p = plan(
        initial_state=[
            {
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": "joined"},
            },
            {"type": "m.room.power_levels", "state_key": "", "content": {"users": {ALICE: 100}, "ban": 10}},
        ],
        power_override={"kick": 20},
    )
    events = presets.initial_events(p)
    assert [e.type for e in events].count("m.room.history_visibility") == 1
    assert [e.type for e in events].count("m.room.power_levels") == 1
    levels = events[2].content
    assert levels == {"users": {ALICE: 100}, "ban": 10, "kick": 20}


def test_power_levels_trusted_invitees_and_override_merge() -> None:
    p = plan(
        preset="trusted_private_chat",
        invites=[(BOB, {"membership": "invite"})],
        power_override={"users": {"@c:s": 5}},
    )
    levels = presets.power_levels(p, None)
    assert levels["users"] == {ALICE: 100, BOB: 100, "@c:s": 5}


def test_create_content_and_versions() -> None:
    create = presets.initial_events(plan(creation_content={"creator": "@x:y", "m.federate": False}))[
        0
    ].content
    assert create == {"m.federate": False, "room_version": "10", "creator": ALICE}
    create = presets.initial_events(plan(room_version="11", room_type="m.space"))[0].content
    assert create == {"room_version": "11", "type": "m.space"}
    assert presets.check_room_version(None) == "10"
    with pytest.raises(ClawlistError) as info:
        presets.check_room_version("9")
    assert info.value.errcode == "M_UNSUPPORTED_ROOM_VERSION"


def test_is_direct_on_invites() -> None:
    events = presets.initial_events(plan(invites=[(BOB, {"membership": "invite"})], is_direct=True))
    assert events[-1].content == {"membership": "invite", "is_direct": True}


@pytest.mark.parametrize(
    "items",
    [
        "x",
        [{"type": "m.room.member", "state_key": BOB, "content": {}}],
        [{"type": "m.room.create", "content": {}}],
        [{"type": "m.room.encryption", "content": {}}],
        [{"type": "x", "content": []}],
        [{"type": "x", "content": {}, "state_key": 5}],
        [{"type": "m.room.join_rules", "content": {"join_rule": "everyone"}}],
    ],
)
def test_bad_initial_state(items: object) -> None:
    with pytest.raises(ClawlistError):
        presets.check_initial_state(items)


def test_choose_preset() -> None:
    assert presets.choose_preset(None, True) == "public_chat"
    assert presets.choose_preset(None, False) == "private_chat"
    with pytest.raises(ClawlistError):
        presets.choose_preset("open", False)


def test_join_carries_is_direct_from_the_invite_only() -> None:
    assert membership.carried_into_join({"membership": "invite", "is_direct": True}) == {"is_direct": True}
    assert membership.carried_into_join({"membership": "invite"}) == {}
    assert membership.carried_into_join({"membership": "join", "is_direct": True}) == {}
    assert membership.carried_into_join(None) == {}


def test_membership_for_state() -> None:
    assert membership.membership_for_state(ALICE, ALICE, "join", "join") == "join"
    assert membership.membership_for_state(ALICE, ALICE, "join", "leave") == "leave"
    assert membership.membership_for_state(ALICE, BOB, "join", "leave") == "kick"
    assert membership.membership_for_state(ALICE, BOB, "ban", "leave") == "unban"
    assert membership.membership_for_state(ALICE, BOB, None, "ban") == "ban"
    with pytest.raises(ClawlistError):
        membership.membership_for_state(ALICE, BOB, None, "knock")
