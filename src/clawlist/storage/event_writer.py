"""The room writer: assigns stream positions and commits events, batching concurrent writes.

Every event is written here. Callers submit an operation (an async function of a `WriteTx`); the
writer gathers the operations that arrive within a few milliseconds, runs each in its own
savepoint inside one transaction, and commits once. An operation that raises is rolled back alone
and gets its exception; the others commit. Positions come from a single-row counter whose lock is
held until commit, so positions become visible strictly in order, also across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.core import events as ev
from clawlist.core.canonical import canonical_json, compute_event_id
from clawlist.core.clock import Clock
from clawlist.core.errors import ClawlistError, too_large
from clawlist.storage.database import Database
from clawlist.storage.event_store import StoredEvent
from clawlist.storage.tables import current_state, events, memberships, rooms, stream_counter, transactions

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class NewEvent:
    room_id: str
    type: str
    sender: str
    content: dict[str, Any]
    state_key: str | None = None
    session_id: str | None = None
    txn_id: str | None = None


class WriteTx:
    """What an operation sees: the connection, and `append` to add an event to a room."""

    def __init__(self, writer: EventWriter, conn: AsyncConnection) -> None:
        self._writer = writer
        self.conn = conn
        self.appended: list[StoredEvent] = []
        self._next_position: int | None = None
        self._depths: dict[str, int] = {}
        self._counter_start: int | None = None

    @property
    def is_sqlite(self) -> bool:
        return self._writer.db.is_sqlite

    def now_ms(self) -> int:
        return self._writer.clock.now_ms()

    def _checkpoint(self) -> tuple[int | None, dict[str, int], int]:
        return self._next_position, dict(self._depths), len(self.appended)

    def _restore(self, saved: tuple[int | None, dict[str, int], int]) -> None:
        self._next_position, self._depths, n = saved
        del self.appended[n:]

    async def _allocate_position(self) -> int:
        if self._next_position is None:
            query = select(stream_counter.c.position).where(stream_counter.c.id == 1)
            if not self.is_sqlite:
                query = query.with_for_update()
            current = (await self.conn.execute(query)).scalar_one()
            self._counter_start = current
            self._next_position = current + 1
        position = self._next_position
        self._next_position += 1
        return position

    async def _next_depth(self, room_id: str) -> int:
        if room_id not in self._depths:
            depth = (
                await self.conn.execute(select(rooms.c.depth).where(rooms.c.room_id == room_id))
            ).scalar()
            self._depths[room_id] = int(depth or 0)
        self._depths[room_id] += 1
        return self._depths[room_id]

    async def append(self, new: NewEvent) -> StoredEvent:
        content_bytes = canonical_json(new.content)
        if len(content_bytes) > self._writer.max_event_bytes:
            raise too_large(
                f"event content is {len(content_bytes)} bytes; the limit is {self._writer.max_event_bytes}"
            )
        position = await self._allocate_position()
        depth = await self._next_depth(new.room_id)
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
        await self.conn.execute(
            events.insert().values(
                position=position,
                event_id=event_id,
                room_id=new.room_id,
                type=new.type,
                state_key=new.state_key,
                sender=new.sender,
                origin_server_ts=ts,
                depth=depth,
                content=content_bytes.decode("utf-8"),
                relates_to=relates_to,
                rel_type=rel_type,
                session_id=new.session_id,
                txn_id=new.txn_id,
            )
        )
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
            await self.conn.execute(
                transactions.insert().values(
                    sender=new.sender,
                    session_id=new.session_id,
                    txn_id=new.txn_id,
                    event_id=event_id,
                    room_id=new.room_id,
                    created_ts=ts,
                )
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
        if self._next_position is not None and self._counter_start is not None:
            await self.conn.execute(
                update(stream_counter)
                .where(stream_counter.c.id == 1)
                .values(position=self._next_position - 1)
            )
        for room_id, depth in self._depths.items():
            await self.conn.execute(update(rooms).where(rooms.c.room_id == room_id).values(depth=depth))


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
        results: list[tuple[_Job[Any], bool, Any]] = []
        async with self.db.write() as conn:
            tx = WriteTx(self, conn)
            for job in batch:
                saved = tx._checkpoint()
                try:
                    async with conn.begin_nested():
                        value = await job.op(tx)
                    results.append((job, True, value))
                    job.appended = tx.appended[saved[2] :]
                except ClawlistError as exc:
                    tx._restore(saved)
                    results.append((job, False, exc))
                except Exception as exc:
                    tx._restore(saved)
                    if not isinstance(exc, ClawlistError):
                        log.exception("write operation failed")
                    results.append((job, False, exc))
            await tx._finish()
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


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")
