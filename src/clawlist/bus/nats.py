"""The NATS bus: core NATS publish/subscribe between processes, JetStream KeyValue for counters.

Names on the NATS server:

- subject `clawlist.<channel>` (`clawlist.wakeup`, `clawlist.ephemeral`) for every bus channel;
- KeyValue bucket `clawlist_counters_<window in ms>` (one per window length, memory storage, created
  when first needed, entries expire after three windows, at least one second), key
  `<urlsafe base64 of the counter key>.<window>`, where `<window>` is `floor(unix_time / window_s)`
  (processes must have roughly synchronised clocks). The value is the count in ASCII decimal,
  increased with compare-and-set on the entry's revision (retried on conflict).

Failure behaviour (the bus is best effort; the database stays the truth):

- `start()` never raises: a background task connects. nats-py retries the first connection and
  every later reconnection itself, forever (`max_reconnect_attempts=-1`), and replays the
  subscriptions after a reconnection; should the client ever close anyway, the task starts a new
  one after a backoff capped at two seconds.
- `connected` is True only while the connection is up and its subscriptions are confirmed by the
  server (a round trip after subscribing or reconnecting).
- `publish()` never raises: while NATS is unreachable it logs a rate-limited warning and drops the
  message (it is not buffered for the reconnection).
- `incr()` counts in this process (`LocalCounters`) whenever NATS or JetStream is unavailable
  (disconnected, JetStream not enabled, a request timing out); after such a failure it stays local
  for a few seconds before trying again. Concurrent increments of one key are serialised within the
  process; conflicts with other processes are retried with a small random backoff, and only after
  `CAS_ATTEMPTS` conflicts in a row does that one increment count locally.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import random
import time
from collections import defaultdict

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from clawlist.bus.base import Handler
from clawlist.bus.memory import LocalCounters, dispatch

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "clawlist."
BUCKET_PREFIX = "clawlist_counters_"

TIMEOUT_S = 1.0
RECONNECT_WAIT_S = 1
BACKOFF_START_S = 0.05
BACKOFF_CAP_S = 2.0
#: Ping the server this often; the connection is declared dead after this many missed pongs.
PING_INTERVAL_S = 5
MAX_OUTSTANDING_PINGS = 3
#: After a JetStream failure, count locally for this long before trying JetStream again.
KV_RETRY_AFTER_S = 5.0
#: Compare-and-set attempts on one counter before giving up (and counting locally).
CAS_ATTEMPTS = 64
WARN_EVERY_S = 10.0

_NETWORK_ERRORS = (NatsError, OSError, TimeoutError)


class _Contention(Exception):
    """Too many compare-and-set conflicts on one counter."""


class _Throttled:
    """Log a warning at most every `WARN_EVERY_S` seconds, counting the ones held back."""

    def __init__(self) -> None:
        self._last = -math.inf
        self._held = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < WARN_EVERY_S:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        if held:
            log.warning(message + " (%d similar warnings suppressed)", *args, held)
        else:
            log.warning(message, *args)


class NatsBus:
    kind = "nats"

    def __init__(self, url: str) -> None:
        self._url = url
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._counters = LocalCounters()
        self._task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._live = False
        self._buckets: dict[int, KeyValue] = {}
        self._kv_retry_at = 0.0
        self._key_locks = [asyncio.Lock() for _ in range(64)]
        self._warn_connection = _Throttled()
        self._warn_publish = _Throttled()
        self._warn_incr = _Throttled()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="clawlist-nats-bus")

    async def stop(self) -> None:
        task, self._task = self._task, None
        for t in [*self._side_tasks, *([task] if task else [])]:
            t.cancel()
        for t in [*self._side_tasks, *([task] if task else [])]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._side_tasks.clear()

    def subscribe(self, channel: str, handler: Handler) -> None:
        new = channel not in self._handlers
        self._handlers[channel].append(handler)
        nc = self._nc
        if new and nc is not None:  # registered after start(): subscribe on the live client too
            side = asyncio.get_running_loop().create_task(self._subscribe(nc, channel))
            self._side_tasks.add(side)
            side.add_done_callback(self._side_tasks.discard)

    @property
    def connected(self) -> bool:
        nc = self._nc
        return self._live and nc is not None and nc.is_connected

    # -- publishing and counting -------------------------------------------------------------------

    async def publish(self, channel: str, payload: bytes) -> None:
        nc = self._nc
        if nc is None or not self.connected:
            self._warn_publish.warn("nats bus is down: dropping messages (channel %s)", channel)
            return
        try:
            await nc.publish(SUBJECT_PREFIX + channel, payload)
        except _NETWORK_ERRORS as exc:
            self._warn_publish.warn(
                "nats bus: publish on %s dropped: %s: %s", channel, type(exc).__name__, exc
            )

    async def incr(self, key: str, window_s: float) -> int:
        js = self._js
        if js is not None and self.connected and time.monotonic() >= self._kv_retry_at:
            try:
                return await self._kv_incr(js, key, window_s)
            except _Contention as exc:
                self._warn_incr.warn("nats bus: counting in this process only: %s", exc)
            except _NETWORK_ERRORS as exc:
                self._kv_retry_at = time.monotonic() + KV_RETRY_AFTER_S
                self._buckets.clear()
                self._warn_incr.warn(
                    "nats bus: counting in this process only: %s: %s", type(exc).__name__, exc
                )
        return self._counters.incr(key, window_s)

    async def _kv_incr(self, js: JetStreamContext, key: str, window_s: float) -> int:
        kv = await self._bucket(js, window_s)
        encoded = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
        name = f"{encoded}.{int(time.time() // window_s)}"
        # One writer per key in this process: conflicts then only come from other processes.
        async with self._key_locks[hash(name) % len(self._key_locks)]:
            for attempt in range(CAS_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
                try:
                    entry = await kv.get(name)
                except KeyNotFoundError:
                    try:
                        await kv.create(name, b"1")
                        return 1
                    except KeyWrongLastSequenceError:
                        continue  # another process created it first
                value = int(entry.value or b"0") + 1
                try:
                    await kv.update(name, str(value).encode(), last=entry.revision)
                    return value
                except KeyWrongLastSequenceError:
                    continue  # another process incremented it first
        raise _Contention(f"counter {key!r}: {CAS_ATTEMPTS} write conflicts in a row")

    async def _bucket(self, js: JetStreamContext, window_s: float) -> KeyValue:
        window_ms = max(1, round(window_s * 1000))
        kv = self._buckets.get(window_ms)
        if kv is None:
            bucket = f"{BUCKET_PREFIX}{window_ms}"
            try:
                kv = await js.key_value(bucket)
            except BucketNotFoundError:
                kv = await js.create_key_value(
                    bucket=bucket,
                    history=1,
                    ttl=max(1.0, 3 * window_s),
                    storage=StorageType.MEMORY,
                    description="clawlist rate-limit counters",
                )
            self._buckets[window_ms] = kv
        return kv

    # -- the connection ----------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_START_S
        while True:
            if await self._session():
                delay = BACKOFF_START_S
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP_S)

    async def _session(self) -> bool:
        """One client, from connection to close. Returns whether it ever got connected."""
        nc = Client()
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        try:
            await nc.connect(
                servers=[u.strip() for u in self._url.split(",")],
                name="clawlist",
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=RECONNECT_WAIT_S,
                connect_timeout=round(TIMEOUT_S),
                ping_interval=PING_INTERVAL_S,
                max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                flush_timeout=TIMEOUT_S,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=on_closed,
            )
            # From here on, `subscribe()` subscribes new channels itself (no await in between).
            channels = list(self._handlers)
            self._nc = nc
            for channel in channels:
                await self._subscribe(nc, channel)
            await nc.flush(timeout=round(TIMEOUT_S))
            self._js = nc.jetstream(timeout=TIMEOUT_S)
            self._live = True
            log.info("nats bus: connected to %s", _redact(self._url))
            await closed.wait()
            self._warn_connection.warn("nats bus: connection closed, reconnecting")
            return True
        except _NETWORK_ERRORS as exc:
            self._warn_connection.warn("nats bus: cannot connect, retrying: %s: %s", type(exc).__name__, exc)
            return self._nc is nc
        except Exception:
            log.exception("nats bus: connection failed, retrying")
            return self._nc is nc
        finally:
            self._live = False
            self._nc = None
            self._js = None
            self._buckets.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), TIMEOUT_S)

    async def _subscribe(self, nc: Client, channel: str) -> None:
        handlers = self._handlers[channel]

        async def on_message(msg: Msg) -> None:
            await dispatch(handlers, msg.data)

        await nc.subscribe(SUBJECT_PREFIX + channel, cb=on_message)

    async def _on_error(self, exc: Exception) -> None:
        self._warn_connection.warn("nats bus: %s: %s", type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        self._live = False

    async def _on_reconnected(self) -> None:
        # nats-py has replayed the subscriptions and done a round trip before calling this.
        self._buckets.clear()  # a restarted server may have lost the (memory) buckets
        self._live = True
        log.info("nats bus: reconnected to %s", _redact(self._url))


def _redact(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
