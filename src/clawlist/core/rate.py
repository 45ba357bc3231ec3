"""A token bucket: `rate` tokens per second, holding at most `burst`. Pure: callers pass the time
(in seconds, from whatever clock they own), so tests control refills."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    stamp: float  # when `tokens` was last brought up to date

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def level(self, now: float) -> float:
        """Tokens available at `now` (nothing is taken)."""
        return min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)

    def take(self, now: float) -> float:
        """Take one token: 0.0 when one was available, else the seconds until one will be."""
        self.tokens = self.level(now)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
