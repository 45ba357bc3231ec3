"""Engines and transactions for SQLite (WAL) and PostgreSQL behind one small interface."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

log = logging.getLogger(__name__)

#: Key in a connection's `info` dict counting the statements that may have changed data.
WRITES_KEY = "clawlist.writes"
_READ_ONLY_PREFIXES = ("SELECT", "SAVEPOINT", "RELEASE", "PRAGMA")
#: SQLite page cache per connection (MiB) and memory-mapped reads (MiB): the defaults of the
#: `sqlite_cache_mb` and `sqlite_mmap_mb` settings, which `actions.services` passes in.
DEFAULT_SQLITE_CACHE_MB = 16
DEFAULT_SQLITE_MMAP_MB = 256


class SyncConnectionAdapter:
    """Gives a synchronous SQLAlchemy connection the awaitable `execute` of an AsyncConnection.

    SQLite writes run on the event loop thread: a statement on a local WAL database takes tens of
    microseconds, less than the thread hop an async driver would add to each one.
    """

    def __init__(self, conn: Connection) -> None:
        self.sync_connection = conn
        self.info = conn.info

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        return self.sync_connection.execute(statement, parameters, **kwargs)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return self.sync_connection.scalar(statement, parameters)

    @property
    def dialect(self) -> Any:
        return self.sync_connection.dialect


class Database:
    """Owns the engines. Writes go through `write()`, reads through `read()`.

    SQLite: every write transaction in this process runs, one at a time, on one synchronous
    connection that begins with BEGIN IMMEDIATE (so a read-then-write transaction never fails
    half-way with SQLITE_BUSY); readers use a small async pool and see WAL snapshots.
    PostgreSQL: one async pool for both.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 10,
        sqlite_cache_mb: int = DEFAULT_SQLITE_CACHE_MB,
        sqlite_mmap_mb: int = DEFAULT_SQLITE_MMAP_MB,
    ) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.schema = schema
        self.sync_engine: Engine | None = None
        self.sync_read_engine: Engine | None = None
        self.sqlite_path: str | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        if self.is_sqlite:
            path = parsed.database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.write_engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)
            self.read_engine = create_async_engine(url, pool_size=4, max_overflow=4)
            sync_url = parsed.set(drivername="sqlite+pysqlite")
            self.sync_engine = create_engine(sync_url, pool_size=1, max_overflow=0)
            # Readers never wait for a pooled connection (that would block the event loop).
            self.sync_read_engine = create_engine(sync_url, pool_size=8, max_overflow=-1)
            pragmas = _SqlitePragmas(cache_mb=sqlite_cache_mb, mmap_mb=sqlite_mmap_mb)
            _sqlite_setup(self.write_engine.sync_engine, pragmas, begin="BEGIN IMMEDIATE")
            _sqlite_setup(self.read_engine.sync_engine, pragmas, begin="BEGIN")
            _sqlite_setup(self.sync_engine, pragmas, begin="BEGIN IMMEDIATE", autocheckpoint=False)
            _sqlite_setup(self.sync_read_engine, pragmas, begin="BEGIN")
            self.sqlite_path = path
        else:
            connect_args: dict[str, Any] = {}
            if schema:
                connect_args["server_settings"] = {"search_path": schema}
            self.write_engine = create_async_engine(
                url,
                pool_size=pool_size,
                max_overflow=pool_size,
                connect_args=connect_args,
                pool_pre_ping=True,
            )
            self.read_engine = self.write_engine
        _count_writes(self.sync_engine if self.sync_engine is not None else self.write_engine.sync_engine)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        if self.sync_engine is None:
            async with self.write_engine.begin() as conn:
                yield conn
            return
        async with self._write_lock:
            with self._sync_transaction() as adapter:
                # The adapter offers the subset of AsyncConnection that actions use (execute).
                yield cast(AsyncConnection, adapter)

    @contextmanager
    def _sync_transaction(self) -> Iterator[SyncConnectionAdapter]:
        assert self.sync_engine is not None
        with self.sync_engine.begin() as conn:
            yield SyncConnectionAdapter(conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction: one consistent snapshot."""
        if self.sync_read_engine is None:
            async with self.read_engine.connect() as conn, conn.begin():
                yield conn
            return
        with self.sync_read_engine.connect() as sync_conn, sync_conn.begin():
            yield cast(AsyncConnection, SyncConnectionAdapter(sync_conn))

    async def ping(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:  # any failure means "not healthy"; the caller reports it
            log.warning("database ping failed", exc_info=True)
            return False

    def start_checkpointer(self, interval_s: float) -> None:
        """SQLite: checkpoint the WAL from a worker thread every `interval_s` seconds.

        The writer connection never checkpoints itself (its automatic checkpoint would copy pages
        and fsync on the event loop, stalling every request); this keeps the WAL short instead.
        """
        if self.sqlite_path and self.sqlite_path != ":memory:" and self._checkpointer is None:
            self._checkpointer = asyncio.create_task(
                self._checkpoint_loop(interval_s), name="sqlite-checkpoint"
            )

    async def _checkpoint_loop(self, interval_s: float) -> None:
        path = str(self.sqlite_path)
        while True:
            await asyncio.sleep(interval_s)
            try:
                # Shielded: if this task is cancelled mid-checkpoint, the thread still finishes
                # with its own connection; nothing is shared with the event loop.
                await asyncio.shield(asyncio.to_thread(_checkpoint, path, "PASSIVE"))
            except sqlite3.Error:
                log.warning("WAL checkpoint failed; will retry", exc_info=True)

    async def checkpoint_now(self) -> None:
        if self.sqlite_path and self.sqlite_path != ":memory:":
            await asyncio.to_thread(_checkpoint, str(self.sqlite_path), "TRUNCATE")

    async def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
            self._checkpointer = None
            # A clean shutdown leaves an empty write-ahead log: everything is in the database file.
            try:
                await self.checkpoint_now()
            except sqlite3.Error:
                log.warning("final WAL checkpoint failed; it is replayed at the next start", exc_info=True)
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()
        if self.sync_engine is not None:
            self.sync_engine.dispose()
        if self.sync_read_engine is not None:
            self.sync_read_engine.dispose()


def _checkpoint(path: str, mode: str) -> None:
    """Checkpoint the WAL on a connection opened, used and closed in the calling (worker) thread."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute(f"PRAGMA wal_checkpoint({mode})")
    finally:
        conn.close()


class _SqlitePragmas:
    """The per-connection memory PRAGMAs, validated once (they are formatted into the statements).

    cache_size is each connection's private page cache (a negative value is KiB); mmap_size maps
    up to that many bytes of the database file into the process, so reading a page costs no copy
    into the private cache: the mapped pages are the operating system's shared file cache, one copy
    for every connection (and every process) reading the same file, reclaimable under pressure.
    Pages still in the write-ahead log are read the usual way until a checkpoint copies them over.
    """

    __slots__ = ("cache_kib", "mmap_bytes")

    def __init__(self, *, cache_mb: int, mmap_mb: int) -> None:
        if isinstance(cache_mb, bool) or not isinstance(cache_mb, int) or cache_mb < 1:
            raise ValueError("sqlite cache must be a whole number of MiB >= 1")
        if isinstance(mmap_mb, bool) or not isinstance(mmap_mb, int) or mmap_mb < 0:
            raise ValueError("sqlite mmap size must be a whole number of MiB >= 0")
        self.cache_kib = cache_mb * 1024
        self.mmap_bytes = mmap_mb * 1024 * 1024


def _sqlite_setup(
    engine: Engine, pragmas: _SqlitePragmas, *, begin: str, autocheckpoint: bool = True
) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver, so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of this process (kill -9); only an
        # operating-system crash or power loss may lose the last transactions.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute(f"PRAGMA cache_size=-{pragmas.cache_kib}")
        cursor.execute(f"PRAGMA mmap_size={pragmas.mmap_bytes}")
        if not autocheckpoint:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


def _count_writes(engine: Engine) -> None:
    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip()[:9].upper().startswith(_READ_ONLY_PREFIXES):
            conn.info[WRITES_KEY] = conn.info.get(WRITES_KEY, 0) + 1
