"""The room writer: assigns stream positions and commits events, batching concurrent writes.

Every event is written here. Callers submit an operation (an async function of a `WriteTx`); the
writer gathers the operations that arrive within a few milliseconds, takes the global write lock,
runs them one after another in one transaction and commits once. An operation that fails before
writing anything is dropped alone; one that fails after writing makes the batch roll back and run
each operation on its own. Positions come from a single-row counter whose lock is held until
commit, so positions become visible strictly in order, also across processes.
See docs/architecture.md, "The room writer".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.core import events as ev
from clawlist.core.canonical import canonical_json, compute_event_id
from clawlist.core.clock import Clock
from clawlist.core.errors import ClawlistError, too_large
from clawlist.storage import event_store
from clawlist.storage.database import WRITES_KEY, Database
from clawlist.storage.event_store import StoredEvent
from clawlist.storage.tables import current_state, events, memberships, rooms, stream_counter, transactions

log = logging.getLogger(__name__)

T = TypeVar("T")

# Built once: executing a prebuilt statement with bound parameters hits the compiled cache.
_INSERT_EVENT = events.insert()
_INSERT_TXN = transactions.insert()
_TXN_LOOKUP = select(transactions.c.event_id, transactions.c.room_id).where(
    (transactions.c.sender == bindparam("sender"))
    & (transactions.c.session_id == bindparam("session_id"))
    & (transactions.c.txn_id == bindparam("txn_id"))
)
_COUNTER = select(stream_counter.c.position).where(stream_counter.c.id == 1)
_COUNTER_FOR_UPDATE = _COUNTER.with_for_update()
_ROOM_CURSOR = select(rooms.c.depth, rooms.c.state_position).where(rooms.c.room_id == bindparam("room_id"))
_UPDATE_ROOM_CURSOR = update(rooms).where(rooms.c.room_id == bindparam("b_room_id"))
STATE_CACHE_ROOMS = 10_000


@dataclass(slots=True)
class NewEvent:
    room_id: str
    type: str
    sender: str
    content: dict[str, Any]
    state_key: str | None = None
    session_id: str | None = None
    txn_id: str | None = None


@dataclass
class _RoomCursor:
    """A room's depth and state version as this transaction sees them."""

    depth: int
    state_position: int
    state_changed: bool = False


@dataclass
class _Checkpoint:
    next_position: int | None
    rooms: dict[str, _RoomCursor]
    appended: int
    pending_events: int
    pending_txns: int


@dataclass
class RoomStateCache:
    """Memberships and state contents of one room, valid while its `state_position` is unchanged.

    Filled only from committed state (never from a transaction that changed the room's state), and
    checked against the database's `rooms.state_position` once per batch, so it is safe across
    processes: any state change anywhere bumps that column.
    """

    state_position: int
    members: dict[str, str | None] = field(default_factory=dict)
    contents: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)


class WriteTx:
    """What an operation sees: the connection, cached state reads, and `append` to add an event."""

    def __init__(self, writer: EventWriter, conn: AsyncConnection) -> None:
        self._writer = writer
        self.conn = conn
        self.appended: list[StoredEvent] = []
        self._next_position: int | None = None
        self._rooms: dict[str, _RoomCursor] = {}
        self._counter_start: int | None = None
        # Rows of non-state events and their transaction ids, written with one executemany at the
        # end of the batch (or earlier, the moment anything needs to read or change them).
        self._pending_events: list[dict[str, Any]] = []
        self._pending_txns: list[dict[str, Any]] = []
        self._pending_ids: set[str] = set()

    @property
    def is_sqlite(self) -> bool:
        return self._writer.db.is_sqlite

    def now_ms(self) -> int:
        return self._writer.clock.now_ms()

    def _checkpoint(self) -> _Checkpoint:
        rooms_copy = {
            k: _RoomCursor(v.depth, v.state_position, v.state_changed) for k, v in self._rooms.items()
        }
        return _Checkpoint(
            self._next_position,
            rooms_copy,
            len(self.appended),
            len(self._pending_events),
            len(self._pending_txns),
        )

    def _restore(self, saved: _Checkpoint) -> None:
        self._next_position, self._rooms = saved.next_position, saved.rooms
        del self.appended[saved.appended :]
        del self._pending_events[saved.pending_events :]
        del self._pending_txns[saved.pending_txns :]
        self._pending_ids = {row["event_id"] for row in self._pending_events}

    async def flush_pending(self) -> None:
        """Write the buffered rows now. Call before reading or changing the events table directly."""
        if self._pending_events:
            await self.conn.execute(_INSERT_EVENT, self._pending_events)
            self._pending_events = []
            self._pending_ids = set()
        if self._pending_txns:
            await self.conn.execute(_INSERT_TXN, self._pending_txns)
            self._pending_txns = []

    async def find_txn(self, sender: str, session_id: str, txn_id: str) -> tuple[str, str] | None:
        """(event id, room id) of an earlier send with this transaction id, if any."""
        for row in self._pending_txns:
            if row["txn_id"] == txn_id and row["sender"] == sender and row["session_id"] == session_id:
                return str(row["event_id"]), str(row["room_id"])
        found = (
            await self.conn.execute(
                _TXN_LOOKUP, {"sender": sender, "session_id": session_id, "txn_id": txn_id}
            )
        ).first()
        return (str(found.event_id), str(found.room_id)) if found else None

    async def get_event(self, event_id: str) -> StoredEvent | None:
        if event_id in self._pending_ids:
            await self.flush_pending()
        return await event_store.get_event(self.conn, event_id)

    async def _lock_counter(self) -> None:
        """Take the global write lock (PostgreSQL: the counter row) before any operation reads.

        Every read an operation makes after this sees all committed writes of every process, and no
        other process can write events until this transaction ends: checks and writes are atomic.
        """
        query = _COUNTER if self.is_sqlite else _COUNTER_FOR_UPDATE
        current = (await self.conn.execute(query)).scalar_one()
        self._counter_start = current
        self._next_position = current + 1

    async def _allocate_position(self) -> int:
        if self._next_position is None:
            await self._lock_counter()
        assert self._next_position is not None
        position = self._next_position
        self._next_position += 1
        return position

    async def _room(self, room_id: str) -> _RoomCursor:
        cursor = self._rooms.get(room_id)
        if cursor is None:
            row = (await self.conn.execute(_ROOM_CURSOR, {"room_id": room_id})).first()
            cursor = _RoomCursor(int(row.depth), int(row.state_position)) if row else _RoomCursor(0, 0)
            self._rooms[room_id] = cursor
        return cursor

    async def _cache_for(self, room_id: str) -> RoomStateCache | None:
        """The room's cache if it may be used now, else None (and reads go to the database)."""
        cursor = await self._room(room_id)
        if cursor.state_changed:
            return None
        cache = self._writer.state_cache.get(room_id)
        if cache is None or cache.state_position != cursor.state_position:
            cache = RoomStateCache(cursor.state_position)
            self._writer.remember_room(room_id, cache)
        return cache

    async def membership_of(self, room_id: str, user_id: str) -> str | None:
        cache = await self._cache_for(room_id)
        if cache is not None and user_id in cache.members:
            return cache.members[user_id]
        value = await event_store.membership_of(self.conn, room_id, user_id)
        if cache is not None:
            cache.members[user_id] = value
        return value

    async def state_content(
        self, room_id: str, event_type: str, state_key: str = ""
    ) -> dict[str, Any] | None:
        cache = await self._cache_for(room_id)
        key = (event_type, state_key)
        if cache is not None and key in cache.contents:
            return cache.contents[key]
        value = await event_store.state_content(self.conn, room_id, event_type, state_key)
        if cache is not None:
            cache.contents[key] = value
        return value

    async def append(self, new: NewEvent) -> StoredEvent:
        content_bytes = canonical_json(new.content)
        if len(content_bytes) > self._writer.max_event_bytes:
            raise too_large(
                f"event content is {len(content_bytes)} bytes; the limit is {self._writer.max_event_bytes}"
            )
        position = await self._allocate_position()
        room = await self._room(new.room_id)
        room.depth += 1
        depth = room.depth
        if new.state_key is not None or new.type == ev.REDACTION:
            # A redaction may strip a state event's content: count it as a state change too.
            room.state_position = position
            room.state_changed = True
        ts = self.now_ms()
        hashed: dict[str, Any] = {
            "type": new.type,
            "room_id": new.room_id,
            "sender": new.sender,
            "origin_server_ts": ts,
            "content": new.content,
            "depth": depth,
        }
        if new.state_key is not None:
            hashed["state_key"] = new.state_key
        event_id = compute_event_id(hashed)
        relates_to, rel_type = ev.relation_of(new.content)
        if new.type == ev.REDACTION and isinstance(new.content.get("redacts"), str):
            relates_to, rel_type = new.content["redacts"], "m.redaction"
        row = {
            "position": position,
            "event_id": event_id,
            "room_id": new.room_id,
            "type": new.type,
            "state_key": new.state_key,
            "sender": new.sender,
            "origin_server_ts": ts,
            "depth": depth,
            "content": content_bytes.decode("utf-8"),
            "relates_to": relates_to,
            "rel_type": rel_type,
            "redacted_by": None,
            "session_id": new.session_id,
            "txn_id": new.txn_id,
        }
        if new.state_key is None:
            self._pending_events.append(row)
            self._pending_ids.add(event_id)
        else:
            # State rows go in at once: state reads join current_state with events.
            await self.conn.execute(_INSERT_EVENT, row)
        if new.state_key is not None:
            await self._upsert(
                current_state,
                {
                    "room_id": new.room_id,
                    "type": new.type,
                    "state_key": new.state_key,
                    "event_id": event_id,
                    "position": position,
                },
                ["room_id", "type", "state_key"],
            )
            if new.type == ev.MEMBER:
                await self._upsert(
                    memberships,
                    {
                        "room_id": new.room_id,
                        "user_id": new.state_key,
                        "membership": str(new.content.get("membership")),
                        "event_id": event_id,
                        "position": position,
                    },
                    ["room_id", "user_id"],
                )
        if new.txn_id is not None and new.session_id is not None:
            self._pending_txns.append(
                {
                    "sender": new.sender,
                    "session_id": new.session_id,
                    "txn_id": new.txn_id,
                    "event_id": event_id,
                    "room_id": new.room_id,
                    "created_ts": ts,
                }
            )
        stored = StoredEvent(
            position=position,
            event_id=event_id,
            room_id=new.room_id,
            type=new.type,
            sender=new.sender,
            origin_server_ts=ts,
            content=new.content,
            state_key=new.state_key,
            depth=depth,
            relates_to=relates_to,
            rel_type=rel_type,
            session_id=new.session_id,
            txn_id=new.txn_id,
        )
        self.appended.append(stored)
        return stored

    async def _upsert(self, table: Any, values: dict[str, Any], keys: list[str]) -> None:
        insert = sqlite_insert if self.is_sqlite else pg_insert
        stmt = insert(table).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={k: v for k, v in values.items() if k not in keys}
        )
        await self.conn.execute(stmt)

    async def _finish(self) -> None:
        await self.flush_pending()
        if self._next_position is not None and self._counter_start is not None:
            await self.conn.execute(
                update(stream_counter)
                .where(stream_counter.c.id == 1)
                .values(position=self._next_position - 1)
            )
        for room_id, room in self._rooms.items():
            await self.conn.execute(
                _UPDATE_ROOM_CURSOR,
                {"b_room_id": room_id, "depth": room.depth, "state_position": room.state_position},
            )


@dataclass
class _Job(Generic[T]):
    op: Callable[[WriteTx], Awaitable[T]]
    future: asyncio.Future[T]
    appended: list[StoredEvent] = field(default_factory=list)


class EventWriter:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        on_commit: Callable[[list[StoredEvent]], Awaitable[None]] | None = None,
        batch_max: int = 256,
        window_ms: float = 1.0,
        max_event_bytes: int = 65_536,
    ) -> None:
        self.db = db
        self.clock = clock
        self.on_commit = on_commit
        self.batch_max = batch_max
        self.window_s = window_ms / 1000
        self.max_event_bytes = max_event_bytes
        self._queue: asyncio.Queue[_Job[Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.last_position = 0
        self.state_cache: dict[str, RoomStateCache] = {}

    def remember_room(self, room_id: str, cache: RoomStateCache) -> None:
        if len(self.state_cache) >= STATE_CACHE_ROOMS:
            self.state_cache.clear()
        self.state_cache[room_id] = cache

    async def start(self) -> None:
        async with self.db.read() as conn:
            self.last_position = int(
                (
                    await conn.execute(select(stream_counter.c.position).where(stream_counter.c.id == 1))
                ).scalar()
                or 0
            )
        self._task = asyncio.create_task(self._run(), name="clawlist-event-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self, op: Callable[[WriteTx], Awaitable[T]]) -> T:
        """Run `op` in the next batch and return its result once the batch has committed."""
        if self._task is None:
            raise RuntimeError("the event writer is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(op, future))
        return await future

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            batch = [job]
            if self.window_s > 0 and self._queue.empty():
                await asyncio.sleep(self.window_s)
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit_batch(batch)
            except asyncio.CancelledError:
                for j in batch:
                    if not j.future.done():
                        j.future.cancel()
                raise
            except Exception as exc:
                log.exception("write batch failed")
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(exc)

    async def _commit_batch(self, batch: list[_Job[Any]]) -> None:
        """Run the batch in one transaction; if an operation fails after it wrote, roll the whole
        transaction back and run each operation alone instead (the rare path)."""
        try:
            results = await self._run_in_one_transaction(batch)
        except _BatchAborted as aborted:
            if len(batch) == 1:
                results = [(batch[0], False, aborted.error)]
            else:
                for job in batch:
                    await self._commit_batch([job])
                return
        appended = [e for j, ok, _ in results if ok for e in j.appended]
        if appended:
            self.last_position = max(self.last_position, appended[-1].position)
            if self.on_commit is not None:
                try:
                    await self.on_commit(appended)
                except Exception:
                    log.exception("post-commit publish failed; readers will catch up by polling")
        for job, ok, value in results:
            if job.future.done():
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    async def _run_in_one_transaction(self, batch: list[_Job[Any]]) -> list[tuple[_Job[Any], bool, Any]]:
        results: list[tuple[_Job[Any], bool, Any]] = []
        async with self.db.write() as conn:
            tx = WriteTx(self, conn)
            await tx._lock_counter()
            for job in batch:
                saved = tx._checkpoint()
                writes_before = conn.info.get(WRITES_KEY, 0)
                try:
                    value = await job.op(tx)
                except Exception as exc:
                    # An operation that failed before writing anything is simply dropped; one that
                    # failed after writing (or hit a database error) spoils the transaction.
                    if isinstance(exc, DBAPIError) or conn.info.get(WRITES_KEY, 0) != writes_before:
                        raise _BatchAborted(exc) from exc
                    if not isinstance(exc, ClawlistError):
                        log.exception("write operation failed")
                    tx._restore(saved)
                    results.append((job, False, exc))
                    continue
                job.appended = tx.appended[saved.appended :]
                results.append((job, True, value))
            await tx._finish()
        return results


class _BatchAborted(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")
