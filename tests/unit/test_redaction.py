"""Matrix redaction rules, room versions 10 and 11 (spec: "Redactions" in the room version pages)."""

from __future__ import annotations

from typing import Any

import pytest

from clawlist.core.redaction import redact_content, redact_event

V10_V11 = pytest.mark.parametrize("version", ["10", "11"])


@V10_V11
def test_message_content_is_emptied(version: str) -> None:
    content = {"msgtype": "m.text", "body": "secret", "m.relates_to": {"rel_type": "m.replace"}}
    assert redact_content("m.room.message", content, version) == {}


@V10_V11
def test_unknown_and_custom_types_are_emptied(version: str) -> None:
    assert redact_content("clawlist.listing", {"price": 5, "body": "x"}, version) == {}
    assert redact_content("m.reaction", {"m.relates_to": {"key": "x"}}, version) == {}
    assert redact_content("m.room.name", {"name": "n"}, version) == {}
    assert redact_content("m.room.topic", {"topic": "t"}, version) == {}
    assert redact_content("m.room.canonical_alias", {"alias": "#a:b"}, version) == {}


@V10_V11
def test_member_keeps_membership_and_join_authorised(version: str) -> None:
    content = {
        "membership": "join",
        "displayname": "Alice",
        "avatar_url": "mxc://x/y",
        "join_authorised_via_users_server": "@a:b",
        "reason": "hi",
    }
    assert redact_content("m.room.member", content, version) == {
        "membership": "join",
        "join_authorised_via_users_server": "@a:b",
    }


def test_member_third_party_invite_signed_kept_only_in_v11() -> None:
    content = {
        "membership": "invite",
        "third_party_invite": {"display_name": "x", "signed": {"mxid": "@a:b", "token": "t"}},
    }
    assert redact_content("m.room.member", content, "11") == {
        "membership": "invite",
        "third_party_invite": {"signed": {"mxid": "@a:b", "token": "t"}},
    }
    assert redact_content("m.room.member", content, "10") == {"membership": "invite"}


def test_create_keeps_only_creator_in_v10_and_everything_in_v11() -> None:
    content = {"creator": "@a:b", "room_version": "10", "type": "m.space", "m.federate": False}
    assert redact_content("m.room.create", content, "10") == {"creator": "@a:b"}
    assert redact_content("m.room.create", content, "11") == content


@V10_V11
def test_join_rules_keep_join_rule_and_allow(version: str) -> None:
    content = {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}], "extra": 1}
    assert redact_content("m.room.join_rules", content, version) == {
        "join_rule": "restricted",
        "allow": [{"type": "m.room_membership"}],
    }


def test_power_levels_keep_invite_only_in_v11() -> None:
    content: dict[str, Any] = {
        "ban": 50,
        "events": {"m.room.name": 50},
        "events_default": 0,
        "invite": 0,
        "kick": 50,
        "redact": 50,
        "state_default": 50,
        "users": {"@a:b": 100},
        "users_default": 0,
        "notifications": {"room": 50},
    }
    v11 = redact_content("m.room.power_levels", content, "11")
    assert v11 == {k: v for k, v in content.items() if k != "notifications"}
    v10 = redact_content("m.room.power_levels", content, "10")
    assert v10 == {k: v for k, v in content.items() if k not in ("notifications", "invite")}


@V10_V11
def test_history_visibility_kept(version: str) -> None:
    content = {"history_visibility": "shared", "other": 1}
    assert redact_content("m.room.history_visibility", content, version) == {"history_visibility": "shared"}


def test_redaction_keeps_redacts_only_in_v11() -> None:
    content = {"redacts": "$abc", "reason": "spam"}
    assert redact_content("m.room.redaction", content, "11") == {"redacts": "$abc"}
    assert redact_content("m.room.redaction", content, "10") == {}


@V10_V11
def test_aliases_event_is_emptied_since_v6(version: str) -> None:
    assert redact_content("m.room.aliases", {"aliases": ["#a:b"]}, version) == {}


def test_default_rules_are_v11() -> None:
    assert redact_content("m.room.redaction", {"redacts": "$x", "reason": "r"}) == {"redacts": "$x"}


def _full_event() -> dict[str, Any]:
    return {
        "event_id": "$e",
        "type": "m.room.member",
        "room_id": "!r:b",
        "sender": "@a:b",
        "state_key": "@a:b",
        "content": {"membership": "join", "displayname": "A"},
        "hashes": {"sha256": "x"},
        "signatures": {"b": {}},
        "depth": 3,
        "prev_events": [],
        "auth_events": [],
        "origin_server_ts": 1,
        "origin": "b",
        "membership": "join",
        "prev_state": [],
        "unsigned": {"age": 5},
        "custom_top": 1,
    }


def test_redact_event_top_level_v11() -> None:
    out = redact_event(_full_event(), "11")
    assert set(out) == {
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
    assert out["content"] == {"membership": "join"}


def test_redact_event_top_level_v10_keeps_origin_membership_prev_state() -> None:
    out = redact_event(_full_event(), "10")
    assert {"origin", "membership", "prev_state"} <= set(out)
    assert "unsigned" not in out
    assert "custom_top" not in out
    assert out["content"] == {"membership": "join"}


def test_redaction_does_not_mutate_input() -> None:
    event = _full_event()
    redact_event(event)
    assert event == _full_event()


@V10_V11
def test_redaction_is_idempotent(version: str) -> None:
    content = {"membership": "join", "displayname": "x", "join_authorised_via_users_server": "@a:b"}
    once = redact_content("m.room.member", content, version)
    assert redact_content("m.room.member", once, version) == once
