"""Identifiers: handles, user ids, aliases and DM keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clawlist.core import ids
from clawlist.core.errors import ClawlistError

RESERVED = frozenset({"admin", "system", "market"})


@pytest.mark.parametrize("handle", ["abc", "a.b", "a_b", "a-b", "agent007", "x" * 32])
def test_valid_handles(handle: str) -> None:
    assert ids.validate_handle(handle, RESERVED) == handle


def test_handles_are_lower_cased() -> None:
    assert ids.validate_handle("AliCe", RESERVED) == "alice"
    assert ids.normalize_handle("Bob") == "bob"


@pytest.mark.parametrize(
    "handle", ["ab", "x" * 33, "a b", "a@b", "a:b", "", "ålice", "a/b", "a\nb", "abc\x00", " bob", "bob "]
)
def test_invalid_handles(handle: str) -> None:
    with pytest.raises(ClawlistError) as info:
        ids.validate_handle(handle, RESERVED)
    assert info.value.status == 400
    assert info.value.errcode == "M_INVALID_USERNAME"


@pytest.mark.parametrize("handle", ["admin", "ADMIN", "System"])
def test_reserved_handles(handle: str) -> None:
    with pytest.raises(ClawlistError) as info:
        ids.validate_handle(handle, RESERVED)
    assert info.value.errcode == "M_EXCLUSIVE"


def test_non_string_handle() -> None:
    with pytest.raises(ClawlistError):
        ids.validate_handle(42, RESERVED)  # type: ignore[arg-type]


def test_user_and_room_ids() -> None:
    assert ids.user_id_for("alice", "test.local") == "@alice:test.local"
    assert ids.parse_user_id("@alice:test.local") == ("alice", "test.local")
    assert ids.parse_user_id("@alice:test.local:8448") == ("alice", "test.local:8448")
    assert ids.room_id_for("abc", "test.local") == "!abc:test.local"


@pytest.mark.parametrize("value", ["alice", "@alice", "@:test.local", "@alice:", "#alice:test.local", ""])
def test_bad_user_ids(value: str) -> None:
    with pytest.raises(ClawlistError) as info:
        ids.parse_user_id(value)
    assert info.value.status == 400


def test_aliases() -> None:
    assert ids.alias_for("market", "test.local") == "#market:test.local"
    assert ids.validate_alias("#market:test.local", "test.local") == "#market:test.local"
    assert ids.validate_alias("#a.b_c-9:test.local", "test.local") == "#a.b_c-9:test.local"


@pytest.mark.parametrize(
    "alias",
    [
        "#market:other.server",
        "market:test.local",
        "#:test.local",
        "#Market:test.local",
        "#a b:test.local",
        "#market\n:test.local",
        "#" + "x" * 65 + ":test.local",
        "#market",
    ],
)
def test_bad_aliases(alias: str) -> None:
    with pytest.raises(ClawlistError) as info:
        ids.validate_alias(alias, "test.local")
    assert info.value.status == 400


def test_dm_key_same_for_either_order() -> None:
    a, b = "@alice:test.local", "@bob:test.local"
    assert ids.dm_key(a, b) == ids.dm_key(b, a)
    assert ids.dm_key(a, b) != ids.dm_key(a, "@carol:test.local")


user_ids = st.from_regex(r"@[a-z0-9._\-]{3,32}:[a-z]{1,10}\.local", fullmatch=True)


@given(user_ids, user_ids)
def test_dm_key_symmetric(a: str, b: str) -> None:
    assert ids.dm_key(a, b) == ids.dm_key(b, a)


@given(user_ids, user_ids, user_ids, user_ids)
def test_dm_key_distinguishes_pairs(a: str, b: str, c: str, d: str) -> None:
    if {a, b} != {c, d}:
        assert ids.dm_key(a, b) != ids.dm_key(c, d)
