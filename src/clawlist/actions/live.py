"""A live session: what one WebSocket connection receives, from a resume position onwards.

It replays visible events after the client's last position from the database, then continues
with the feed, with no gap and no duplicate (it registers with the feed before replaying and holds
what arrives meanwhile). Frames wait in a bounded queue: a client that stops reading overflows it
and is disconnected with a code it can resume from, so server memory stays flat.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import orjson

from clawlist.actions.actor import Actor
from clawlist.actions.ephemeral import Change
from clawlist.actions.feed import FeedEvent
from clawlist.actions.services import Services
from clawlist.actions.viewer import Viewer, replay
from clawlist.core.errors import ClawlistError

REPLAY_PAGE = 500


class SlowConsumer(Exception):
    """The outbound queue overflowed."""


#: Writes one frame straight to the client's socket buffer, without a task switch; raises
#: SlowConsumer when the client's unsent backlog is over the limit.
FrameSink = Callable[[bytes], None]


class LiveSession:
    def __init__(self, svc: Services, actor: Actor, *, max_queue: int, seq: int = 0) -> None:
        self.svc = svc
        self.actor = actor
        self.max_queue = max_queue
        self.viewer = Viewer(actor.principal_id, set(), set())
        self.subscribed: set[str] | None = None  # None: every joined room
        self.cursor = 0
        self.overflowed = False
        #: Set when the queue overflows, so the connection can close even while a send is blocked.
        self.overflow = asyncio.Event()
        self._queue: deque[tuple[bytes, int]] = deque()
        #: Position of the last event handed to the connection: where a dropped client resumes.
        self.delivered_floor = 0
        self._ready = asyncio.Event()
        self._replaying = False
        self._resuming = False
        self._seq = seq  # continues the connection's frame numbering
        #: Set by a transport that can write synchronously: live frames then skip the queue and the
        #: writer task (one wake-up per frame per connection is the main cost of a large fan-out).
        self.sink: FrameSink | None = None
        self._in_flight = False  # the writer task holds frames it has not transmitted yet

    # -- lifecycle
    async def start(self, resume_from: int | None) -> int:
        """Begin at `resume_from` (replaying what came after it) or at the present. Returns the head."""
        head = self.svc.feed.head
        if resume_from is not None and (resume_from < 0 or resume_from > head):
            raise ClawlistError(
                400, "CL_BAD_POSITION", f"position {resume_from} is not in this stream (head {head})"
            )
        self.viewer = await Viewer.load(self.svc, self.actor)
        self.svc.ephemeral.listen(self._on_ephemeral)
        self.cursor = head if resume_from is None else resume_from
        self._resuming = resume_from is not None
        self._replaying = True
        if resume_from is None:
            self._go_live_if_caught_up()
        return head

    def _go_live_if_caught_up(self) -> bool:
        """Switch from replay to the feed once nothing is left behind. No await happens between the
        check and the registration, so the feed cannot advance in between: no gap, no duplicate."""
        if self.cursor < self.svc.feed.head:
            return False
        self._replaying = False
        self.svc.feed.listen(self._on_feed)
        if self._resuming:
            self.frame("resumed", {"position": self.cursor})
        return True

    async def _replay_some(self) -> None:
        """Queue the next page of missed events, no more than the queue holds (paced by the writer)."""
        if self._go_live_if_caught_up():
            return
        page_size = max(1, min(REPLAY_PAGE, self.max_queue // 2))
        buffered = self.svc.feed.after(self.cursor)
        if buffered is not None:
            for item in buffered[:page_size]:
                self.cursor = item.position
                if self.viewer.accept(item.event):
                    self._push_event(item)
            return
        page, reached = await replay(self.svc, self.viewer, self.cursor, self.svc.feed.head, page_size)
        for item in page:
            self._push_event(item)
        self.cursor = max(self.cursor, reached)

    def close(self) -> None:
        self.svc.feed.unlisten(self._on_feed)
        self.svc.ephemeral.unlisten(self._on_ephemeral)

    # -- subscriptions
    def subscribe(self, rooms: list[str], limit: int) -> list[str]:
        current = set(self.viewer.joined) if self.subscribed is None else self.subscribed
        wanted = current | set(rooms)
        if len(wanted) > limit:
            raise ClawlistError(400, "CL_LIMIT_EXCEEDED", f"at most {limit} subscriptions per connection")
        not_member = sorted(r for r in rooms if r not in self.viewer.joined)
        if not_member:
            raise ClawlistError(403, "M_FORBIDDEN", f"not a member of {', '.join(not_member)}")
        self.subscribed = wanted
        return sorted(wanted)

    def unsubscribe(self, rooms: list[str]) -> list[str]:
        current = set(self.viewer.joined) if self.subscribed is None else self.subscribed
        self.subscribed = current - set(rooms)
        return sorted(self.subscribed)

    # -- feed
    def _on_feed(self, batch: list[FeedEvent]) -> None:
        for item in batch:
            self._deliver(item)

    def _deliver(self, item: FeedEvent) -> None:
        if item.position <= self.cursor:
            return  # already replayed
        self.cursor = item.position
        if self.viewer.accept(item.event):
            event = item.event
            own_membership = event.type == "m.room.member" and event.state_key == self.viewer.user_id
            if self.subscribed is None or event.room_id in self.subscribed or own_membership:
                if (
                    own_membership
                    and event.content.get("membership") == "join"
                    and self.subscribed is not None
                ):
                    self.subscribed.add(event.room_id)
                self._push_event(item)

    def _push_event(self, item: FeedEvent) -> None:
        self._seq += 1
        self._push(b'{"op":"event","seq":%d,"d":%s}' % (self._seq, item.json), item.position)

    def _on_ephemeral(self, change: Change) -> None:
        if change.kind == "presence":
            if not shares_room(change, self.viewer):
                return None
            return self.frame(
                "presence", {"user_id": change.user_id, **self.svc.ephemeral.presence_of(change.user_id)}
            )
        if change.room_id is None or change.room_id not in self.viewer.joined:
            return None
        if self.subscribed is not None and change.room_id not in self.subscribed:
            return None
        if change.kind == "typing":
            return self.frame(
                "typing", {"room_id": change.room_id, "user_ids": change.data.get("user_ids", [])}
            )
        if change.kind == "receipt":
            return self.frame(
                "receipt", {"room_id": change.room_id, "user_id": change.user_id, **change.data}
            )
        return None

    # -- outbound
    def frame(self, op: str, data: object) -> None:
        self._seq += 1
        self._push(orjson.dumps({"op": op, "seq": self._seq, "d": data}))

    def _push(self, frame: bytes, position: int = 0) -> None:
        if self.overflowed:
            return
        if self.sink is not None and not (self._queue or self._in_flight or self._replaying):
            # Nothing is waiting ahead of this frame, so writing it now keeps the order. (A replay
            # goes through the writer task, which the transport's flow control paces.)
            try:
                self.sink(frame)
            except SlowConsumer:
                self._overflow()
                return
            self.delivered_floor = max(self.delivered_floor, position)
            return
        if len(self._queue) >= self.max_queue:
            self._overflow()
            return
        self._queue.append((frame, position))
        self._ready.set()

    def _overflow(self) -> None:
        self.overflowed = True
        self._queue.clear()
        self._ready.set()
        self.overflow.set()

    async def next_frames(self) -> list[bytes]:
        """Wait for frames; raises SlowConsumer once the queue has overflowed. The caller transmits
        them, then calls `transmitted()`; until then new frames queue behind them."""
        while not self._queue:
            if self.overflowed:
                raise SlowConsumer
            if self._replaying:
                await self._replay_some()
                continue
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed:
            raise SlowConsumer
        frames = [frame for frame, _ in self._queue]
        last = max((position for _, position in self._queue), default=0)
        self.delivered_floor = max(self.delivered_floor, last)
        self._queue.clear()
        self._in_flight = True
        return frames

    def transmitted(self) -> None:
        self._in_flight = False


def shares_room(change: Change, viewer: Viewer) -> bool:
    """Whether a presence change concerns the viewer: their own, or of someone in one of their rooms."""
    if change.user_id == viewer.user_id:
        return True
    rooms = change.data.get("rooms") or ()
    return any(room in viewer.joined for room in rooms)
