"""The token bucket behind the gateway's per-connection and the per-agent send rate limits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clawlist.core.rate import TokenBucket


def test_a_full_bucket_allows_a_burst_then_asks_to_wait() -> None:
    bucket = TokenBucket.full(rate=2.0, burst=3.0, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == 0.5  # one token refills in 1/rate seconds


def test_it_refills_at_the_rate_up_to_the_burst() -> None:
    bucket = TokenBucket.full(rate=10.0, burst=5.0, now=0.0)
    for _ in range(5):
        bucket.take(0.0)
    assert bucket.level(0.2) == 2.0
    assert bucket.level(60.0) == 5.0  # never above the burst
    assert bucket.take(0.2) == 0.0
    assert round(bucket.level(0.2), 9) == 1.0


def test_a_clock_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket.full(rate=1.0, burst=1.0, now=10.0)
    assert bucket.take(10.0) == 0.0
    assert bucket.level(5.0) == 0.0


@given(
    rate=st.floats(0.1, 1000),
    burst=st.integers(1, 100),
    gaps=st.lists(st.floats(0, 5), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_rate_times_elapsed(rate: float, burst: int, gaps: list[float]) -> None:
    bucket = TokenBucket.full(rate, float(burst), 0.0)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        if bucket.take(now) == 0.0:
            allowed += 1
    assert allowed <= burst + rate * now + 1e-6
