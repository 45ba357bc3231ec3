"""Matrix `/sync` (spec v1.11): everything new for one device since a token, as a Matrix client wants it.

Built on the native sync's machinery (`actions/sync.py`): the event feed's ring buffer (an
incremental sync whose token is recent reads no event from the database), the visibility filter
(`Viewer`), the ephemeral hub (typing, receipts, presence, and the account-data wake-ups) and the
same token, extended with the account-data version: `s<position>_<ephemeral>_<instance>_<account data>`.

Per room, a joined room's `timeline` holds the events after the token that pass the filter (the
last `limit` of them, `limited` when there were more), its `state` the state events of the gap
before the timeline; an initial sync, `full_state`, or a room joined since the token gets the
whole current state instead (minus what the timeline holds). Rooms whose own membership changed
since the token go to `invite` (stripped state) or `leave` (the timeline up to the leave).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import and_, or_, select

from clawlist.actions import account_data
from clawlist.actions import matrix_sync_reads as reads
from clawlist.actions.actor import Actor
from clawlist.actions.ephemeral import Change
from clawlist.actions.feed import FeedEvent
from clawlist.actions.filters import resolve
from clawlist.actions.history import position_token
from clawlist.actions.live import shares_room
from clawlist.actions.services import Services
from clawlist.actions.signals import mark_active, receipts_content, set_presence
from clawlist.actions.sync import SyncToken, db_head, parse_token, wait_any
from clawlist.actions.viewer import Viewer
from clawlist.core import events as ev
from clawlist.core.errors import bad_request
from clawlist.core.filters import Filter, select_fields
from clawlist.storage.event_store import StoredEvent, event_from_row
from clawlist.storage.tables import current_state, events, memberships

SET_PRESENCE = ("online", "offline", "unavailable")
#: State an invitee sees before joining (stripped: type, state_key, sender, content).
INVITE_STATE_TYPES = (
    ev.CREATE,
    ev.JOIN_RULES,
    ev.NAME,
    ev.CANONICAL_ALIAS,
    ev.TOPIC,
    "m.room.avatar",
    "m.room.encryption",
)
#: Events read per room, at most, looking for timeline events that pass a restrictive filter.
MAX_SCAN = 2000


@dataclass
class _RoomWindow:
    """The visible events of one room after the token, oldest first."""

    items: list[FeedEvent] = field(default_factory=list)
    truncated: bool = False  # older events of the window were not read (database path)


async def sync(
    svc: Services,
    actor: Actor,
    *,
    since: str | None,
    timeout_ms: int,
    full_state: bool,
    set_presence_to: str,
    filter_ref: str | None,
) -> dict[str, Any]:
    """The `/sync` response body (a dict whose events may be `orjson.Fragment`s: render with orjson)."""
    if set_presence_to not in SET_PRESENCE:
        raise bad_request(f"set_presence must be one of {', '.join(SET_PRESENCE)}")
    filt = await resolve(svc, actor, filter_ref)
    token = parse_token(since) if since else None
    if token is not None and (
        (token.instance == svc.ephemeral.instance and token.ephemeral > svc.ephemeral.version)
        or (token.position > svc.feed.head and token.position > await db_head(svc))
    ):
        raise bad_request("this sync token is from the future")
    await _presence(svc, actor, set_presence_to)
    builder = _Sync(svc, actor, filt)
    if token is None:
        return await builder.initial()
    timeout_s = min(max(timeout_ms, 0), svc.settings.sync_max_timeout_ms) / 1000
    return await builder.incremental(token, timeout_s, full_state)


async def _presence(svc: Services, actor: Actor, state: str) -> None:
    """`set_presence`: online marks the agent active; unavailable sets it (once); offline: nothing."""
    if state == "online":
        await mark_active(svc, actor.principal_id)
    elif state == "unavailable":
        current = svc.ephemeral.presence.get(actor.principal_id)
        if current is None or current.state != "unavailable":
            await set_presence(svc, actor, "unavailable")


def _stripped(event: StoredEvent) -> dict[str, Any]:
    return {
        "type": event.type,
        "state_key": event.state_key,
        "sender": event.sender,
        "content": event.content,
    }


class _Sync:
    """One /sync request: the filter, the caller, and the sections being filled."""

    def __init__(self, svc: Services, actor: Actor, filt: Filter) -> None:
        self.svc = svc
        self.actor = actor
        self.filt = filt
        self.me = actor.principal_id
        self.session = actor.session_id
        maximum = svc.settings.sync_max_events
        #: Timeline events per room of a room's whole history (initial sync, a room just joined).
        self.limit = filt.timeline_limit(maximum)
        #: ... and of what happened since the token: everything (up to `sync_max_events`) unless
        #: the filter sets a limit, so a client that keeps up never misses an event in a burst.
        self.window_limit = maximum if filt.timeline.limit is None else self.limit
        self.join: dict[str, dict[str, Any]] = {}
        self.invite: dict[str, dict[str, Any]] = {}
        self.leave: dict[str, dict[str, Any]] = {}
        self.head = 0  # the position the response reaches

    # -- rendering -------------------------------------------------------------------------------
    def render(self, item: FeedEvent) -> Any:
        """A timeline or state event for this device: the feed's JSON unless this device sent it
        (then with `unsigned.transaction_id`) or the filter selects fields."""
        event = item.event
        fields = self.filt.event_fields
        if fields is None and (event.txn_id is None or event.session_id != self.session):
            return orjson.Fragment(item.matrix_json())
        out = event.to_client(for_session=self.session)
        out.pop("position", None)
        return out if fields is None else select_fields(out, fields)

    def _timeline_ok(self, event: StoredEvent) -> bool:
        f = self.filt.timeline
        return f.everything or f.allows(event.type, event.sender, event.room_id, event.content)

    def _state_ok(self, event: StoredEvent) -> bool:
        f = self.filt.state
        return f.everything or f.allows(event.type, event.sender, event.room_id, event.content)

    # -- initial sync ----------------------------------------------------------------------------
    async def initial(self) -> dict[str, Any]:
        svc = self.svc
        version = svc.ephemeral.version
        head = self.head = max(svc.feed.head, await db_head(svc))
        viewer = await Viewer.load(svc, self.actor)
        items = await account_data.changed_since(svc, self.me, 0)
        acct = max((i.version for i in items), default=0)
        async with reads.LazyReader(svc) as conn:
            for room_id in sorted(viewer.joined):
                if self.filt.allows_room(room_id):
                    self.join[room_id] = await self._full_room(conn, room_id, head, None)
            for room_id in sorted(viewer.invited):
                if self.filt.allows_room(room_id):
                    self.invite[room_id] = await self._invite(conn, room_id, None)
            if self.filt.include_leave:
                await self._left_rooms(conn)
        await self._ephemeral(viewer, None, initial=True)
        self._room_account_data(viewer, items)
        presence = self._presence_events(viewer, None)
        token = SyncToken(head, version, svc.ephemeral.instance, acct)
        return self._response(token, presence, self._global_account_data(items))

    async def _left_rooms(self, conn: reads.LazyReader) -> None:
        """`include_leave` on an initial sync: rooms left (or banned from), as they were at the leave;
        the timeline only holds the caller's own membership events if they never joined."""
        rows = (await conn.execute(reads.LEFT, {"me": self.me})).all()
        for row in rows:
            room_id, stop = str(row.room_id), int(row.position)
            if not self.filt.allows_room(room_id):
                continue
            was_member = (
                await conn.execute(reads.WAS_MEMBER, {"room_id": room_id, "me": self.me, "stop": stop})
            ).first()
            if was_member is not None:
                entry = await self._full_room(conn, room_id, stop, None)
            else:
                own = (await conn.execute(reads.OWN_MEMBER, {"room_id": room_id, "me": self.me})).first()
                timeline = [FeedEvent(event_from_row(own))] if own is not None else []
                entry = self._joined_entry(timeline, False, [], stop)
            self.leave[room_id] = {key: entry[key] for key in ("timeline", "state", "account_data")}

    # -- incremental sync ------------------------------------------------------------------------
    async def incremental(self, token: SyncToken, timeout_s: float, full_state: bool) -> dict[str, Any]:
        svc = self.svc
        hub = svc.ephemeral
        viewer = await Viewer.load_since(svc, self.actor, token.position)
        eph: int | None = token.ephemeral if token.instance == hub.instance else None
        acct = token.account_data or 0
        deadline = time.monotonic() + timeout_s
        position = token.position
        while True:
            version = hub.version  # read before looking, so nothing slips between look and token
            head = self.head = max(svc.feed.head, position)
            changes = None if eph is None else hub.since(eph)
            window, own_last = await self._window(viewer, position, head)
            if changes is None or any(c.kind == "account_data" and c.user_id == self.me for c in changes):
                items = await account_data.changed_since(svc, self.me, acct)
            else:
                items = []
            await self._rooms(viewer, window, own_last, position, head, full_state)
            await self._ephemeral(viewer, changes, initial=False)
            self._room_account_data(viewer, items)
            presence = self._presence_events(viewer, changes)
            global_data = self._global_account_data(items)
            acct = max([acct, *(i.version for i in items)])
            found = self.join or self.invite or self.leave or presence or global_data
            if found or full_state or time.monotonic() >= deadline:
                break
            position, eph = head, version
            await wait_any(svc, position, version, max(0.0, deadline - time.monotonic()))
        next_token = SyncToken(head, version, hub.instance, acct)
        return self._response(next_token, presence, global_data)

    async def _window(
        self, viewer: Viewer, after: int, head: int
    ) -> tuple[dict[str, _RoomWindow], dict[str, StoredEvent]]:
        """Visible events with `after < position <= head`, by room, and each room's last event
        changing the caller's own membership. From the feed's buffer when it reaches back."""
        window: dict[str, _RoomWindow] = {}
        own_last: dict[str, StoredEvent] = {}
        buffered = self.svc.feed.after(after)
        if buffered is None:
            return await self._db_window(viewer, after, head)
        me = self.me
        for item in buffered:
            event = item.event
            if event.position > head:
                break
            if viewer.accept(event):
                room = window.get(event.room_id)
                if room is None:
                    room = window[event.room_id] = _RoomWindow()
                room.items.append(item)
                if event.type == ev.MEMBER and event.state_key == me:
                    own_last[event.room_id] = event
        return window, own_last

    async def _db_window(
        self, viewer: Viewer, after: int, head: int
    ) -> tuple[dict[str, _RoomWindow], dict[str, StoredEvent]]:
        """The same from the database (the token is older than the buffer): per room, the last
        events that pass the timeline filter, and the caller's membership changes."""
        window: dict[str, _RoomWindow] = {}
        own_last: dict[str, StoredEvent] = {}
        async with reads.LazyReader(self.svc) as conn:
            own_rows = (
                await conn.execute(
                    select(events)
                    .where(
                        and_(
                            events.c.type == ev.MEMBER,
                            events.c.state_key == self.me,
                            events.c.position > after,
                            events.c.position <= head,
                        )
                    )
                    .order_by(events.c.position)
                )
            ).all()
            own_items: dict[str, list[FeedEvent]] = {}
            for row in own_rows:
                item = FeedEvent(event_from_row(row))
                viewer.accept(item.event)
                own_items.setdefault(item.event.room_id, []).append(item)
                own_last[item.event.room_id] = item.event
            stops = {room_id: head for room_id in viewer.joined}
            stops.update({room_id: min(stop, head) for room_id, stop in viewer.until.items()})
            for room_id, stop in sorted(stops.items()):
                last = own_last.get(room_id)
                if not self.filt.allows_room(room_id) or (
                    last is not None and self._newly_joined(viewer, room_id, last)
                ):
                    continue
                tail, more = await self._db_tail(conn, room_id, after, stop, self.window_limit)
                if tail or more:
                    window[room_id] = _RoomWindow(tail, more)
            for room_id, items in own_items.items():
                if room_id not in window:
                    window[room_id] = _RoomWindow(items)
        return window, own_last

    def _newly_joined(self, viewer: Viewer, room_id: str, last_own: StoredEvent) -> bool:
        return last_own.content.get("membership") == "join" and viewer.prior.get(room_id) != "join"

    async def _rooms(
        self,
        viewer: Viewer,
        window: dict[str, _RoomWindow],
        own_last: dict[str, StoredEvent],
        after: int,
        head: int,
        full_state: bool,
    ) -> None:
        candidates = set(window)
        if full_state:
            candidates |= viewer.joined
        if not candidates:
            return
        async with reads.LazyReader(self.svc) as conn:
            for room_id in sorted(candidates):
                if not self.filt.allows_room(room_id):
                    continue
                room = window.get(room_id) or _RoomWindow()
                last = own_last.get(room_id)
                if last is not None:
                    membership = last.content.get("membership")
                    if membership == "join" and self._newly_joined(viewer, room_id, last):
                        self.join[room_id] = await self._full_room(conn, room_id, head, None)
                        continue
                    if membership == "invite":
                        self.invite[room_id] = await self._invite(conn, room_id, last)
                        continue
                    if membership in ("leave", "ban"):
                        self.leave[room_id] = await self._left_room(conn, room_id, room, after)
                        continue
                    if membership != "join":
                        continue  # knock: not offered
                if room_id not in viewer.joined and room_id not in viewer.until:
                    continue
                if full_state:
                    self.join[room_id] = await self._full_room(conn, room_id, head, room)
                else:
                    entry = await self._room_delta(conn, room_id, room, after, head)
                    if entry is not None:
                        self.join[room_id] = entry

    # -- one room --------------------------------------------------------------------------------
    def _pick(self, room: _RoomWindow) -> tuple[list[FeedEvent], bool]:
        """The timeline of a window: its last events that pass the filter, and whether it is limited."""
        limit = self.window_limit
        matching = [i for i in room.items if self._timeline_ok(i.event)]
        if len(matching) > limit:
            return matching[len(matching) - limit :], True
        return matching, room.truncated

    async def _db_tail(
        self, conn: reads.LazyReader, room_id: str, after: int, upper: int, limit: int
    ) -> tuple[list[FeedEvent], bool]:
        """The last `limit` events of a room with `after < position <= upper` that pass the timeline
        filter, oldest first, and whether more (or unexamined) ones remain before them."""
        everything = self.filt.timeline.everything
        page = limit + 1 if everything else max(limit + 1, 100)
        found: list[StoredEvent] = []
        scanned = 0
        more = False
        while True:
            rows = (
                await conn.execute(
                    reads.TAIL, {"room_id": room_id, "after": after, "upper": upper, "n": page}
                )
            ).all()
            for row in rows:
                event = event_from_row(row)
                if everything or self._timeline_ok(event):
                    found.append(event)
                    if len(found) > limit:
                        break
            scanned += len(rows)
            if len(found) > limit:
                found, more = found[:limit], True
                break
            if len(rows) < page:
                break
            if scanned >= MAX_SCAN:
                more = True
                break
            upper = int(rows[-1].position) - 1
        return [FeedEvent(e) for e in reversed(found)], more

    def _lazy_members(self, timeline: list[FeedEvent], *, include_self: bool) -> set[str] | None:
        """With lazy-loading, the members whose state is sent: timeline senders (and the caller)."""
        if not self.filt.lazy_load_members:
            return None
        wanted = {i.event.sender for i in timeline}
        if include_self:
            wanted.add(self.me)
        return wanted

    async def _full_room(
        self, conn: reads.LazyReader, room_id: str, head: int, room: _RoomWindow | None
    ) -> dict[str, Any]:
        """A joined room with its whole state: initial sync, `full_state`, or joined since the token."""
        if room is None:
            timeline, limited = await self._db_tail(conn, room_id, 0, head, self.limit)
        else:
            timeline, limited = self._pick(room)
        in_timeline = {i.event.event_id for i in timeline}
        lazy = self._lazy_members(timeline, include_self=True)
        query = (
            select(events)
            .select_from(current_state.join(events, events.c.event_id == current_state.c.event_id))
            .where(and_(current_state.c.room_id == room_id, current_state.c.position <= head))
            .order_by(events.c.position)
        )
        if lazy is not None:
            query = query.where(
                or_(current_state.c.type != ev.MEMBER, current_state.c.state_key.in_(sorted(lazy)))
            )
        state = [
            FeedEvent(e)
            for e in (event_from_row(r) for r in (await conn.execute(query)).all())
            if e.event_id not in in_timeline and self._state_ok(e)
        ]
        entry = self._joined_entry(timeline, limited, state, head)
        entry["summary"] = await self._summary(conn, room_id)
        return entry

    async def _room_delta(
        self, conn: reads.LazyReader, room_id: str, room: _RoomWindow, after: int, head: int
    ) -> dict[str, Any] | None:
        """A joined room's changes since the token; None when there are none."""
        if not room.items and not room.truncated:
            return None
        timeline, limited = self._pick(room)
        state = await self._gap_state(conn, room_id, room, timeline, after)
        lazy = self._lazy_members(timeline, include_self=False)
        if lazy:
            covered = {i.event.state_key for i in [*timeline, *state] if i.event.type == ev.MEMBER}
            missing = sorted(lazy - covered)
            if missing:
                rows = (
                    await conn.execute(
                        select(events)
                        .select_from(memberships.join(events, events.c.event_id == memberships.c.event_id))
                        .where(and_(memberships.c.room_id == room_id, memberships.c.user_id.in_(missing)))
                    )
                ).all()
                state.extend(FeedEvent(event_from_row(r)) for r in rows)
        if not timeline and not limited and not state:
            return None
        entry = self._joined_entry(timeline, limited, state, head)
        if any(i.event.type == ev.MEMBER for i in [*timeline, *state]):
            entry["summary"] = await self._summary(conn, room_id)
        return entry

    async def _gap_state(
        self,
        conn: reads.LazyReader,
        room_id: str,
        room: _RoomWindow,
        timeline: list[FeedEvent],
        after: int,
    ) -> list[FeedEvent]:
        """State events of the window that come before the timeline (and are not in it), the last
        per (type, state key): what a client must apply before the timeline to be current."""
        start = timeline[0].position if timeline else None
        in_timeline = {i.event.event_id for i in timeline}
        gap: dict[tuple[str, str], FeedEvent] = {}
        if room.truncated:
            first = room.items[0].position if room.items else (start or after + 1)
            for row in (
                await conn.execute(reads.GAP_STATE, {"room_id": room_id, "after": after, "before": first})
            ).all():
                event = event_from_row(row)
                gap[(event.type, event.state_key or "")] = FeedEvent(event)
        for item in room.items:
            event = item.event
            if event.state_key is None or event.event_id in in_timeline:
                continue
            if start is not None and item.position >= start:
                continue
            gap[(event.type, event.state_key)] = item
        lazy = self._lazy_members(timeline, include_self=False)
        return [
            item
            for (event_type, state_key), item in gap.items()
            if self._state_ok(item.event) and (lazy is None or event_type != ev.MEMBER or state_key in lazy)
        ]

    def _joined_entry(
        self, timeline: list[FeedEvent], limited: bool, state: list[FeedEvent], head: int
    ) -> dict[str, Any]:
        prev = timeline[0].position - 1 if timeline else head
        return {
            "timeline": {
                "events": [self.render(i) for i in timeline],
                "limited": limited,
                "prev_batch": position_token(prev),
            },
            "state": {"events": [self.render(i) for i in state]},
            "ephemeral": {"events": []},
            "account_data": {"events": []},
            "summary": {},
            "unread_notifications": {},
        }

    async def _left_room(
        self, conn: reads.LazyReader, room_id: str, room: _RoomWindow, after: int
    ) -> dict[str, Any]:
        """A room left (or been kicked or banned from) since the token: its events up to the leave."""
        timeline, limited = self._pick(room)
        state = await self._gap_state(conn, room_id, room, timeline, after)
        prev = timeline[0].position - 1 if timeline else after
        return {
            "timeline": {
                "events": [self.render(i) for i in timeline],
                "limited": limited,
                "prev_batch": position_token(prev),
            },
            "state": {"events": [self.render(i) for i in state]},
            "account_data": {"events": []},
        }

    async def _invite(
        self, conn: reads.LazyReader, room_id: str, invite: StoredEvent | None
    ) -> dict[str, Any]:
        """Stripped state for an invited room, with the invitee's own invite event."""
        rows = (
            await conn.execute(
                select(events)
                .select_from(current_state.join(events, events.c.event_id == current_state.c.event_id))
                .where(
                    and_(
                        current_state.c.room_id == room_id,
                        current_state.c.type.in_(INVITE_STATE_TYPES),
                        current_state.c.state_key == "",
                    )
                )
                .order_by(events.c.position)
            )
        ).all()
        stripped = [_stripped(event_from_row(r)) for r in rows]
        if invite is None:
            own = (await conn.execute(reads.OWN_MEMBER, {"room_id": room_id, "me": self.me})).first()
            invite = event_from_row(own) if own is not None else None
        if invite is not None:
            stripped.append(_stripped(invite))
        return {"invite_state": {"events": stripped}}

    async def _summary(self, conn: reads.LazyReader, room_id: str) -> dict[str, Any]:
        rows = (await conn.execute(reads.MEMBER_COUNTS, {"room_id": room_id})).all()
        counts = {str(r.membership): int(r.n) for r in rows}
        summary: dict[str, Any] = {
            "m.joined_member_count": int(counts.get("join", 0)),
            "m.invited_member_count": int(counts.get("invite", 0)),
        }
        if not (await conn.execute(reads.NAMED, {"room_id": room_id})).scalar():
            heroes = (
                (await conn.execute(reads.HERO_MEMBERS, {"room_id": room_id, "me": self.me})).scalars().all()
            )
            summary["m.heroes"] = list(heroes)
        return summary

    # -- what is not in timelines --------------------------------------------------------------
    def _entry(self, room_id: str) -> dict[str, Any]:
        entry = self.join.get(room_id)
        if entry is None:
            entry = self.join[room_id] = {
                "timeline": {"events": [], "limited": False, "prev_batch": position_token(self.head)},
                "state": {"events": []},
                "ephemeral": {"events": []},
                "account_data": {"events": []},
                "summary": {},
                "unread_notifications": {},
            }
        return entry

    async def _ephemeral(self, viewer: Viewer, changes: list[Change] | None, *, initial: bool) -> None:
        """`m.typing` and `m.receipt` per joined room: what changed (or, without the history of
        changes, the current state of every room, once)."""
        f = self.filt.ephemeral
        if f.disabled:
            return
        rooms = sorted(r for r in viewer.joined if self.filt.allows_room(r) and f.allows_room(r))
        typing: dict[str, list[str]] = {}
        receipts: dict[str, dict[str, Any]] = {}
        hub = self.svc.ephemeral
        if changes is None:
            for room_id in rooms:
                users = hub.typing_in(room_id)
                if users or not initial:
                    typing[room_id] = users
            if f.allows_type("m.receipt"):
                receipts = await receipts_content(self.svc, rooms)
        else:
            wanted = set(rooms)
            for change in changes:
                if change.room_id not in wanted:
                    continue
                if change.kind == "typing":
                    typing[change.room_id] = hub.typing_in(change.room_id)
                elif change.kind == "receipt":
                    data = change.data
                    receipts.setdefault(change.room_id, {}).setdefault(
                        str(data.get("event_id")), {}
                    ).setdefault(str(data.get("type", "m.read")), {})[change.user_id] = {"ts": data.get("ts")}
        for room_id in rooms:
            out = []
            if room_id in typing and f.allows_type("m.typing"):
                out.append({"type": "m.typing", "content": {"user_ids": typing[room_id]}})
            if room_id in receipts and f.allows_type("m.receipt"):
                out.append({"type": "m.receipt", "content": receipts[room_id]})
            if f.limit is not None:
                out = out[: f.limit]
            if out:
                self._entry(room_id)["ephemeral"]["events"].extend(out)

    def _room_account_data(self, viewer: Viewer, items: list[account_data.AccountDataItem]) -> None:
        f = self.filt.room_account_data
        if f.disabled:
            return
        for item in items:
            if (
                not item.room_id
                or item.room_id not in viewer.joined
                or not self.filt.allows_room(item.room_id)
            ):
                continue
            if f.allows(item.type, self.me, item.room_id):
                events_out = self._entry(item.room_id)["account_data"]["events"]
                if f.limit is None or len(events_out) < f.limit:
                    events_out.append({"type": item.type, "content": item.content})

    def _global_account_data(self, items: list[account_data.AccountDataItem]) -> list[dict[str, Any]]:
        f = self.filt.account_data
        if f.disabled:
            return []
        out = [
            {"type": i.type, "content": i.content}
            for i in items
            if not i.room_id and f.allows(i.type, self.me)
        ]
        return out if f.limit is None else out[: f.limit]

    def _presence_events(self, viewer: Viewer, changes: list[Change] | None) -> list[dict[str, Any]]:
        f = self.filt.presence
        if f.disabled:
            return []
        hub = self.svc.ephemeral
        source = hub.changes if changes is None else changes
        users: dict[str, None] = {}
        for change in source:
            if (
                change.kind == "presence"
                and shares_room(change, viewer)
                and f.allows("m.presence", change.user_id)
            ):
                users.pop(change.user_id, None)
                users[change.user_id] = None  # ordered by latest change
        out = [{"type": "m.presence", "sender": user, "content": hub.presence_of(user)} for user in users]
        return out if f.limit is None else out[len(out) - f.limit :]

    def _response(
        self, token: SyncToken, presence: list[dict[str, Any]], global_data: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "next_batch": token.render(),
            "rooms": {"join": self.join, "invite": self.invite, "leave": self.leave, "knock": {}},
            "presence": {"events": presence},
            "account_data": {"events": global_data},
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
            "device_unused_fallback_key_types": [],
        }
