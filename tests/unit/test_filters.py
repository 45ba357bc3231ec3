"""Sync filter parsing and matching (core/filters.py), and the Matrix event JSON of the feed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from clawlist.actions.feed import FeedEvent
from clawlist.core.errors import ClawlistError
from clawlist.core.filters import (
    DEFAULT_FILTER,
    DEFAULT_TIMELINE_LIMIT,
    parse_filter,
    select_fields,
    split_field,
)
from clawlist.storage.event_store import StoredEvent


def test_empty_filter_restricts_nothing() -> None:
    f = parse_filter({})
    assert f == DEFAULT_FILTER
    for part in (f.timeline, f.state, f.ephemeral, f.presence, f.account_data, f.room_account_data):
        assert part.everything and not part.disabled
    assert f.timeline_limit(1000) == DEFAULT_TIMELINE_LIMIT
    assert f.allows_room("!a:b") and not f.lazy_load_members


def test_types_with_wildcards_and_not_types() -> None:
    f = parse_filter({"room": {"timeline": {"types": ["m.room.*", "org.x"], "not_types": ["m.room.member"]}}})
    t = f.timeline
    assert t.allows("m.room.message", "@a:b")
    assert t.allows("org.x", "@a:b")
    assert not t.allows("org.xy", "@a:b")
    assert not t.allows("m.room.member", "@a:b")  # not_types wins
    assert not t.allows("m.reaction", "@a:b")
    assert not t.everything
    star = parse_filter({"presence": {"not_types": ["*"]}}).presence
    assert not star.allows("m.presence", "@a:b")


def test_senders_rooms_and_urls() -> None:
    f = parse_filter(
        {
            "room": {
                "rooms": ["!r:s", "!q:s"],
                "not_rooms": ["!q:s"],
                "timeline": {"senders": ["@a:s"], "not_senders": ["@b:s"], "contains_url": True},
            }
        }
    )
    assert f.allows_room("!r:s") and not f.allows_room("!q:s") and not f.allows_room("!x:s")
    t = f.timeline
    assert t.allows("m.room.message", "@a:s", "!r:s", {"url": "mxc://s/x"})
    assert not t.allows("m.room.message", "@a:s", "!r:s", {"body": "no url"})
    assert not t.allows("m.room.message", "@c:s", "!r:s", {"url": "mxc://s/x"})


def test_limits_and_disabled_sections() -> None:
    f = parse_filter(
        {"presence": {"limit": 0}, "account_data": {"types": []}, "room": {"timeline": {"limit": 5000.0}}}
    )
    assert f.presence.disabled and f.account_data.disabled
    assert f.timeline_limit(1000) == 1000
    assert parse_filter({"room": {"timeline": {"limit": 3}}}).timeline_limit(1000) == 3
    lazy = parse_filter({"room": {"state": {"lazy_load_members": True}}})
    assert lazy.lazy_load_members


def test_unknown_keys_are_allowed() -> None:
    f = parse_filter({"future": 1, "room": {"timeline": {"unread_thread_notifications": True, "x": []}}})
    assert f.timeline.everything


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"room": 1},
        {"room": {"timeline": {"limit": "1"}}},
        {"room": {"timeline": {"limit": True}}},
        {"room": {"timeline": {"limit": 1.5}}},
        {"room": {"timeline": {"limit": -1}}},
        {"room": {"timeline": {"types": "m.room.message"}}},
        {"room": {"timeline": {"types": [1]}}},
        {"room": {"timeline": {"senders": ["alice"]}}},
        {"room": {"rooms": ["#alias:s"]}},
        {"room": {"include_leave": "yes"}},
        {"room": {"state": {"lazy_load_members": 1}}},
        {"event_fields": "type"},
        {"event_format": "xml"},
        {"presence": []},
    ],
)
def test_invalid_filters_are_bad_json(bad: Any) -> None:
    with pytest.raises(ClawlistError) as info:
        parse_filter(bad)
    assert info.value.status == 400 and info.value.errcode == "M_BAD_JSON"


def test_event_fields() -> None:
    assert split_field("content.body") == ("content", "body")
    assert split_field("content.m\\.relates_to") == ("content", "m.relates_to")
    event = {
        "type": "m.room.message",
        "sender": "@a:s",
        "content": {"body": "hi", "msgtype": "m.text", "m.relates_to": {"rel_type": "x"}},
    }
    fields = parse_filter(
        {"event_fields": ["type", "content.body", "content.m\\.relates_to", "nope.x"]}
    ).event_fields
    assert fields is not None
    assert select_fields(event, fields) == {
        "type": "m.room.message",
        "content": {"body": "hi", "m.relates_to": {"rel_type": "x"}},
    }


def test_feed_event_matrix_json_drops_only_the_position() -> None:
    event = StoredEvent(
        position=42,
        event_id="$e",
        room_id="!r:s",
        type="m.room.message",
        sender="@a:s",
        origin_server_ts=1,
        content={"body": "position", "n": {"position": 1}},
        unsigned={"age": 1},
    )
    item = FeedEvent(event)
    expected = event.to_client()
    del expected["position"]
    assert orjson.loads(item.matrix_json()) == expected
