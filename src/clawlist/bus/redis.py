"""The Redis bus: PUBLISH/SUBSCRIBE between processes, INCR/PEXPIRE for shared counters.

Names on the Redis server:

- channel `clawlist:<channel>` (`clawlist:wakeup`, `clawlist:ephemeral`) for every bus channel;
- key `clawlist:counter:<key>:<window>` for counters, where `<window>` is
  `floor(unix_time / window_s)` (processes must have roughly synchronised clocks) and the key expires
  two windows (at least one second) after its last increment.

Failure behaviour (the bus is best effort; the database stays the truth):

- `start()` never raises: one background task connects, subscribes, reads, and when anything goes
  wrong reconnects with exponential backoff capped at two seconds, forever, re-subscribing each time.
- `connected` is True only while the subscription is live (confirmed by the server).
- `publish()` never raises: while Redis is unreachable it logs a rate-limited warning and drops the
  message. While the subscription is down, at most one attempt per second is made, so a dead Redis
  costs a publish nothing most of the time and at most the (short) socket timeouts otherwise.
- `incr()` counts in this process (`LocalCounters`) whenever Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from clawlist.bus.base import Handler
from clawlist.bus.memory import LocalCounters, dispatch

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "clawlist:"
COUNTER_PREFIX = "clawlist:counter:"
#: Subscribed when no handler is registered, so that `connected` still means something.
IDLE_CHANNEL = "clawlist:_idle"

SOCKET_TIMEOUT_S = 1.0
#: How long one read of the subscription waits (bounds how late a channel registered after start()
#: gets subscribed).
READ_POLL_S = 0.25
BACKOFF_START_S = 0.05
BACKOFF_CAP_S = 2.0
#: When the subscription is down, try the network at most this often for publish/incr.
RETRY_WHEN_DOWN_S = 1.0
#: Ping the subscription after this much silence, and give up on it if the pong takes this long.
IDLE_PING_S = 5.0
PONG_TIMEOUT_S = 5.0
WARN_EVERY_S = 10.0

_NETWORK_ERRORS = (RedisError, OSError, TimeoutError)


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


class RedisBus:
    kind = "redis"

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._by_name: dict[bytes, str] = {}
        self._late: set[str] = set()
        self._counters = LocalCounters()
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._last_failure = -math.inf
        self._warn_publish = _Throttled()
        self._warn_incr = _Throttled()
        self._warn_subscription = _Throttled()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="clawlist-redis-bus")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected = False
        with contextlib.suppress(*_NETWORK_ERRORS):
            await self._client.aclose()

    def subscribe(self, channel: str, handler: Handler) -> None:
        if channel not in self._handlers:
            self._by_name[(CHANNEL_PREFIX + channel).encode()] = channel
            self._late.add(channel)
        self._handlers[channel].append(handler)

    @property
    def connected(self) -> bool:
        return self._connected

    # -- publishing and counting -------------------------------------------------------------------

    async def publish(self, channel: str, payload: bytes) -> None:
        if not self._worth_trying():
            self._warn_publish.warn("redis bus is down: dropping messages (channel %s)", channel)
            return
        try:
            await self._client.publish(CHANNEL_PREFIX + channel, payload)
        except _NETWORK_ERRORS as exc:
            self._last_failure = time.monotonic()
            self._warn_publish.warn(
                "redis bus: publish on %s dropped: %s: %s", channel, type(exc).__name__, exc
            )

    async def incr(self, key: str, window_s: float) -> int:
        if self._worth_trying():
            window = int(time.time() // window_s)
            name = f"{COUNTER_PREFIX}{key}:{window}"
            ttl_ms = max(1000, math.ceil(window_s * 2000))
            try:
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.incr(name)
                    pipe.pexpire(name, ttl_ms)
                    value, _ = await pipe.execute()
                return int(value)
            except _NETWORK_ERRORS as exc:
                self._last_failure = time.monotonic()
                self._warn_incr.warn(
                    "redis bus: counting in this process only: %s: %s", type(exc).__name__, exc
                )
        return self._counters.incr(key, window_s)

    def _worth_trying(self) -> bool:
        return self._connected or time.monotonic() - self._last_failure >= RETRY_WHEN_DOWN_S

    # -- the subscription --------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_START_S
        while True:
            pubsub = self._client.pubsub()
            try:
                await self._listen(pubsub)
            except _NETWORK_ERRORS as exc:
                self._warn_subscription.warn(
                    "redis bus: subscription lost, reconnecting: %s: %s", type(exc).__name__, exc
                )
            except Exception:
                log.exception("redis bus: subscription failed, reconnecting")
            finally:
                if self._connected:
                    delay = BACKOFF_START_S
                self._connected = False
                self._last_failure = time.monotonic()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP_S)

    async def _listen(self, pubsub: PubSub) -> None:
        """Subscribe, then read until the connection fails (raises; never returns)."""
        self._late = set()
        names = [CHANNEL_PREFIX + c for c in self._handlers] or [IDLE_CHANNEL]
        await pubsub.subscribe(*names)
        waiting = {n.encode() for n in names}
        last_rx = time.monotonic()
        ping_sent: float | None = None
        while True:
            if self._late:  # channels first registered after start()
                late = [CHANNEL_PREFIX + c for c in self._late]
                self._late = set()
                await pubsub.subscribe(*late)
            message: dict[str, Any] | None = await pubsub.get_message(timeout=READ_POLL_S)
            now = time.monotonic()
            if message is None:
                if now - last_rx < IDLE_PING_S:
                    continue
                if ping_sent is None:
                    await pubsub.ping()
                    ping_sent = now
                elif now - ping_sent > PONG_TIMEOUT_S:
                    raise TimeoutError("redis did not answer a ping on the subscription")
                continue
            last_rx, ping_sent = now, None
            kind = message.get("type")
            if kind == "message":
                channel = self._by_name.get(message["channel"])
                if channel is not None:
                    await dispatch(self._handlers[channel], message["data"])
            elif kind == "subscribe" and waiting:
                waiting.discard(message["channel"])
                if not waiting:
                    self._connected = True
                    log.info("redis bus: subscribed on %s", _redact(self._url))


def _redact(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
