"""Matrix sync filters: parsing, validation and matching (spec v1.11, "Filtering").

A filter is a JSON object a client stores (`POST /user/{u}/filter`) or sends inline with `/sync`.
`parse_filter` validates it (400 `M_BAD_JSON` on a wrong shape, like Synapse's schema check; unknown
keys are allowed for forward compatibility) and turns it into immutable matchers that a sync applies
to every event it considers, so matching must be cheap: a filter that restricts nothing says so
(`EventFilter.everything`) and is skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from clawlist.core.errors import ClawlistError

#: Timeline events per room when the filter gives no limit (Synapse's default).
DEFAULT_TIMELINE_LIMIT = 10


def _bad(message: str) -> ClawlistError:
    return ClawlistError(400, "M_BAD_JSON", f"invalid filter: {message}")


class _Patterns:
    """Event type patterns: exact strings, or globs where `*` matches any sequence of characters."""

    __slots__ = ("exact", "regex")

    def __init__(self, values: tuple[str, ...]) -> None:
        self.exact = frozenset(v for v in values if "*" not in v)
        globs = [v for v in values if "*" in v]
        self.regex = (
            re.compile("|".join("(?:" + ".*".join(map(re.escape, g.split("*"))) + r")\Z" for g in globs))
            if globs
            else None
        )

    def match(self, value: str) -> bool:
        if value in self.exact:
            return True
        return self.regex is not None and self.regex.match(value) is not None


@dataclass(frozen=True)
class EventFilter:
    """An `EventFilter` / `RoomEventFilter` / `StateFilter`: which events pass, and how many."""

    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: frozenset[str] | None = None
    not_senders: frozenset[str] = frozenset()
    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    _types: _Patterns | None = field(default=None, repr=False, compare=False)
    _not_types: _Patterns | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_types", _Patterns(self.types) if self.types is not None else None)
        object.__setattr__(self, "_not_types", _Patterns(self.not_types) if self.not_types else None)

    @property
    def everything(self) -> bool:
        """True when no event is ever filtered out (the limit aside)."""
        return (
            self.types is None
            and not self.not_types
            and self.senders is None
            and not self.not_senders
            and self.rooms is None
            and not self.not_rooms
            and self.contains_url is None
        )

    @property
    def disabled(self) -> bool:
        """`limit: 0` or `types: []`: this section is not wanted at all."""
        return self.limit == 0 or self.types == ()

    def allows_type(self, event_type: str) -> bool:
        if self._not_types is not None and self._not_types.match(event_type):
            return False
        return self._types is None or self._types.match(event_type)

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def allows(self, event_type: str, sender: str, room_id: str | None = None, content: Any = None) -> bool:
        if sender in self.not_senders:
            return False
        if self.senders is not None and sender not in self.senders:
            return False
        if room_id is not None and not self.allows_room(room_id):
            return False
        if not self.allows_type(event_type):
            return False
        if self.contains_url is not None:
            has_url = isinstance(content, dict) and isinstance(content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True


@dataclass(frozen=True)
class Filter:
    """A whole sync filter."""

    timeline: EventFilter = EventFilter()
    state: EventFilter = EventFilter()
    ephemeral: EventFilter = EventFilter()
    room_account_data: EventFilter = EventFilter()
    presence: EventFilter = EventFilter()
    account_data: EventFilter = EventFilter()
    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    include_leave: bool = False
    event_fields: tuple[tuple[str, ...], ...] | None = None
    event_format: str = "client"

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def timeline_limit(self, maximum: int) -> int:
        limit = DEFAULT_TIMELINE_LIMIT if self.timeline.limit is None else self.timeline.limit
        return min(limit, maximum)

    @property
    def lazy_load_members(self) -> bool:
        return self.state.lazy_load_members


DEFAULT_FILTER = Filter()


# -- parsing ------------------------------------------------------------------------------------


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"'{where}' must be an object")
    return value


def _strings(value: Any, where: str, sigil: str | None = None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"'{where}' must be an array of strings")
    if sigil is not None:
        for v in value:
            if not v.startswith(sigil) or ":" not in v[1:]:
                raise _bad(f"'{where}' holds {v!r}, which is not a {sigil}-identifier")
    return tuple(value)


def _bool(value: Any, where: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _bad(f"'{where}' must be true or false")
    return value


def _limit(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"'{where}' must be a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise _bad(f"'{where}' must be a whole number")
        value = int(value)
    if value < 0:
        raise _bad(f"'{where}' must not be negative")
    return int(value)


def _frozen(values: tuple[str, ...] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


def parse_event_filter(value: Any, where: str, *, room_event: bool = False) -> EventFilter:
    obj = _object(value, where)
    kwargs: dict[str, Any] = {
        "limit": _limit(obj.get("limit"), f"{where}.limit"),
        "types": _strings(obj.get("types"), f"{where}.types"),
        "not_types": _strings(obj.get("not_types"), f"{where}.not_types") or (),
        "senders": _frozen(_strings(obj.get("senders"), f"{where}.senders", "@")),
        "not_senders": _frozen(_strings(obj.get("not_senders"), f"{where}.not_senders", "@")) or frozenset(),
    }
    if room_event:
        kwargs["rooms"] = _frozen(_strings(obj.get("rooms"), f"{where}.rooms", "!"))
        kwargs["not_rooms"] = (
            _frozen(_strings(obj.get("not_rooms"), f"{where}.not_rooms", "!")) or frozenset()
        )
        kwargs["contains_url"] = _bool(obj.get("contains_url"), f"{where}.contains_url")
        kwargs["lazy_load_members"] = bool(_bool(obj.get("lazy_load_members"), f"{where}.lazy_load_members"))
        kwargs["include_redundant_members"] = bool(
            _bool(obj.get("include_redundant_members"), f"{where}.include_redundant_members")
        )
        for flag in ("unread_thread_notifications", "org.matrix.msc3773.unread_thread_notifications"):
            _bool(obj.get(flag), f"{where}.{flag}")
    return EventFilter(**kwargs)


def split_field(path: str) -> tuple[str, ...]:
    """`content.m\\.relates_to` -> ("content", "m.relates_to"): dots separate, `\\.` is a dot."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in path:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return tuple(parts)


def parse_filter(value: Any) -> Filter:
    """A validated `Filter` from the JSON a client sent; 400 M_BAD_JSON when it is malformed."""
    if not isinstance(value, dict):
        raise _bad("a filter must be a JSON object")
    room = _object(value.get("room"), "room")
    fields = _strings(value.get("event_fields"), "event_fields")
    event_format = value.get("event_format", "client")
    if event_format not in ("client", "federation"):
        raise _bad("'event_format' must be 'client' or 'federation'")
    return Filter(
        timeline=parse_event_filter(room.get("timeline"), "room.timeline", room_event=True),
        state=parse_event_filter(room.get("state"), "room.state", room_event=True),
        ephemeral=parse_event_filter(room.get("ephemeral"), "room.ephemeral", room_event=True),
        room_account_data=parse_event_filter(room.get("account_data"), "room.account_data", room_event=True),
        presence=parse_event_filter(value.get("presence"), "presence"),
        account_data=parse_event_filter(value.get("account_data"), "account_data"),
        rooms=_frozen(_strings(room.get("rooms"), "room.rooms", "!")),
        not_rooms=_frozen(_strings(room.get("not_rooms"), "room.not_rooms", "!")) or frozenset(),
        include_leave=bool(_bool(room.get("include_leave"), "room.include_leave")),
        event_fields=None if fields is None else tuple(split_field(f) for f in fields),
        event_format=str(event_format),
    )


def select_fields(event: dict[str, Any], fields: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """Only the listed (possibly nested) fields of `event`, as `event_fields` asks."""
    out: dict[str, Any] = {}
    for path in fields:
        source: Any = event
        for key in path:
            if not isinstance(source, dict) or key not in source:
                break
            source = source[key]
        else:
            target = out
            for key in path[:-1]:
                nxt = target.get(key)
                if not isinstance(nxt, dict):
                    nxt = target[key] = {}
                target = nxt
            target[path[-1]] = source
    return out
