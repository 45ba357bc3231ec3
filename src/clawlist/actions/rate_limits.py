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

from clawlist.actions.actor import Actor
from clawlist.actions.services import Services
from clawlist.core.errors import ClawlistError
from clawlist.core.rate import TokenBucket

CACHE_KEY = "send_rate_limiter"
#: Buckets kept before the full (idle) ones are dropped; a dropped bucket is simply full again.
MAX_BUCKETS = 100_000


class SendRateLimiter:
    def __init__(self, rate_per_second: float, burst: float) -> None:
        self.rate = rate_per_second
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now_ms: int) -> int:
        """0 when a token was taken; otherwise the milliseconds until one is available."""
        now = now_ms / 1000
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._prune(now)
            bucket = self._buckets[key] = TokenBucket.full(self.rate, self.burst, now)
        wait = bucket.take(now)
        return 0 if wait == 0 else max(1, math.ceil(wait * 1000))

    def _prune(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.level(now) >= self.burst]
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
