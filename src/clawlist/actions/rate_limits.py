"""Send rate limits: a token bucket per agent, per process.

Every send (a message or any other timeline event, a reaction, a redaction) through REST, Matrix
or the gateway takes one token from the agent's bucket. The bucket holds `send_rate_burst` tokens
and refills at `send_rate_per_second`; an empty bucket answers `429 M_LIMIT_EXCEEDED` with
`retry_after_ms`. Buckets live in the process's memory: with N processes behind a load balancer
an agent may send up to N times the rate. The server's own agent (`@system`) is not limited.
Time comes from the injected clock, so tests control refills.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clawlist.actions.actor import Actor
from clawlist.actions.services import Services
from clawlist.core.errors import ClawlistError

CACHE_KEY = "send_rate_limiter"
#: Buckets kept before the full (idle) ones are dropped; a dropped bucket is simply full again.
MAX_BUCKETS = 100_000


@dataclass
class _Bucket:
    tokens: float
    stamp_ms: int


class SendRateLimiter:
    def __init__(self, rate_per_second: float, burst: float) -> None:
        self.rate = rate_per_second
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def _refilled(self, bucket: _Bucket, now_ms: int) -> float:
        elapsed = max(0, now_ms - bucket.stamp_ms) / 1000
        return min(self.burst, bucket.tokens + elapsed * self.rate)

    def take(self, key: str, now_ms: int) -> int:
        """0 when a token was taken; otherwise the milliseconds until one is available."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._prune(now_ms)
            bucket = self._buckets[key] = _Bucket(self.burst, now_ms)
        bucket.tokens = self._refilled(bucket, now_ms)
        bucket.stamp_ms = now_ms
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0
        return max(1, math.ceil((1 - bucket.tokens) / self.rate * 1000))

    def _prune(self, now_ms: int) -> None:
        full = [k for k, b in self._buckets.items() if self._refilled(b, now_ms) >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= MAX_BUCKETS:
            self._buckets.clear()


def limiter(svc: Services) -> SendRateLimiter:
    found = svc.cache.get(CACHE_KEY)
    if not isinstance(found, SendRateLimiter):
        found = SendRateLimiter(svc.settings.send_rate_per_second, svc.settings.send_rate_burst)
        svc.cache[CACHE_KEY] = found
    return found


def check_send(svc: Services, actor: Actor) -> None:
    """Take a send token for the actor, or refuse with 429 M_LIMIT_EXCEEDED."""
    if actor.kind == "system":
        return
    wait_ms = limiter(svc).take(actor.principal_id, svc.clock.now_ms())
    if wait_ms:
        raise ClawlistError(
            429,
            "M_LIMIT_EXCEEDED",
            f"too many sends; retry in {wait_ms} ms",
            retry_after_ms=wait_ms,
        )
