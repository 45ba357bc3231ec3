"""Canonical JSON and event ids."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clawlist.core.canonical import canonical_json, compute_event_id, unpadded_b64url
from clawlist.core.errors import ClawlistError


def test_keys_sorted_at_every_level() -> None:
    value = {"b": 1, "a": {"z": 1, "y": [{"d": 1, "c": 2}]}}
    assert canonical_json(value) == b'{"a":{"y":[{"c":2,"d":1}],"z":1},"b":1}'


def test_compact_without_whitespace() -> None:
    out = canonical_json({"a": [1, 2, {"b": None, "c": True, "d": False}], "e": "x y"})
    assert out == b'{"a":[1,2,{"b":null,"c":true,"d":false}],"e":"x y"}'


def test_utf8_not_escaped() -> None:
    out = canonical_json({"name": "caf\u00e9 \u65e5\u672c \U0001f980"})
    assert out == '{"name":"caf\u00e9 \u65e5\u672c \U0001f980"}'.encode()
    assert b"\\u" not in out


def test_matrix_spec_examples() -> None:
    # examples from the Matrix appendix "Canonical JSON"
    assert canonical_json({}) == b"{}"
    assert canonical_json({"one": 1, "two": "Two"}) == b'{"one":1,"two":"Two"}'
    assert canonical_json({"b": "2", "a": "1"}) == b'{"a":"1","b":"2"}'
    assert canonical_json({"auth": {"success": True, "mxid": "@john.doe:example.com"}}) == (
        b'{"auth":{"mxid":"@john.doe:example.com","success":true}}'
    )
    assert canonical_json({"a": "\u65e5\u672c\u8a9e"}) == '{"a":"\u65e5\u672c\u8a9e"}'.encode()
    assert canonical_json({"\u672c": 2, "\u65e5": 1}) == '{"\u65e5":1,"\u672c":2}'.encode()
    assert canonical_json({"a": None}) == b'{"a":null}'


def test_integers_out_of_range_are_rejected_with_a_client_error() -> None:
    with pytest.raises(ClawlistError) as info:
        canonical_json({"price": 10**30})
    assert info.value.status == 400
    assert info.value.errcode == "M_BAD_JSON"


def test_unpadded_b64url() -> None:
    assert unpadded_b64url(b"\xfb\xff") == "-_8"
    assert "=" not in unpadded_b64url(b"a")


EVENT: dict[str, Any] = {
    "type": "m.room.message",
    "room_id": "!r:test.local",
    "sender": "@a:test.local",
    "origin_server_ts": 1_700_000_000_000,
    "content": {"msgtype": "m.text", "body": "hi"},
    "depth": 7,
}


def expected_id(hashed: dict[str, Any]) -> str:
    raw = json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "$" + base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def test_event_id_formula() -> None:
    event_id = compute_event_id(EVENT)
    assert event_id == expected_id(EVENT)
    assert re.fullmatch(r"\$[A-Za-z0-9_-]{43}", event_id)


def test_event_id_ignores_event_id_and_unsigned() -> None:
    with_extras = {**EVENT, "event_id": "$whatever", "unsigned": {"age": 1}}
    assert compute_event_id(with_extras) == compute_event_id(EVENT)


def test_event_id_changes_with_any_hashed_field() -> None:
    base = compute_event_id(EVENT)
    for key, value in [
        ("depth", 8),
        ("origin_server_ts", 1),
        ("content", {"msgtype": "m.text", "body": "ho"}),
        ("sender", "@b:test.local"),
        ("room_id", "!s:test.local"),
        ("type", "m.reaction"),
    ]:
        assert compute_event_id({**EVENT, key: value}) != base
    assert compute_event_id({**EVENT, "state_key": ""}) != base


json_scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _reorder(value: Any, rnd: Any) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _reorder(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_reorder(v, rnd) for v in value]
    return value


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6), st.randoms())
def test_canonical_json_stable_under_key_reordering(value: dict[str, Any], rnd: Any) -> None:
    assert canonical_json(_reorder(value, rnd)) == canonical_json(value)


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_canonical_json_round_trips_and_matches_reference(value: dict[str, Any]) -> None:
    out = canonical_json(value)
    assert json.loads(out) == value
    assert out == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
