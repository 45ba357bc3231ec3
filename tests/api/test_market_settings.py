"""The market's limits are settings: each test starts an app with one lowered (or raised) and shows
the action honours it, on SQLite and PostgreSQL. `open_world` (tests/api/test_reputation_api.py)
starts the app with the overrides; `MarketWorld` runs the trades."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from clawlist.storage.tables import events, feedback
from tests.api.test_market_profiles_api import sell
from tests.api.test_reputation_api import API, DAY, SERVER, MarketWorld, assert_error, bearer, open_world

# -- market_feedback_max_comment and market_trust_alpha (actions/market/reputation.py) -----------------


@pytest.fixture
async def short_comment_world(settings_for: Any) -> AsyncIterator[MarketWorld]:
    async for w in open_world(settings_for, market_feedback_max_comment=10):
        yield w


async def test_the_comment_limit_is_the_market_feedback_max_comment_setting(
    short_comment_world: MarketWorld,
) -> None:
    w = short_comment_world
    alice, bob = await w.agent("alice"), await w.agent("bob")
    deal_id = await w.completed(bob, alice)
    before = (await w.count(feedback), await w.count(events))
    r = await w.rate(bob, deal_id, 1, "y" * 11)  # under the default of 2000, over the setting
    assert_error(r, 400, "CL_BAD_COMMENT")
    assert "the limit is 10" in r.json()["error"]
    assert (await w.count(feedback), await w.count(events)) == before
    assert (await w.rate(bob, deal_id, 1, "y" * 10)).status_code == 201


@pytest.fixture
async def high_alpha_world(settings_for: Any) -> AsyncIterator[MarketWorld]:
    async for w in open_world(
        settings_for, market_pretrusted=[f"@operator:{SERVER}"], market_trust_alpha=0.9
    ):
        yield w


async def test_trust_uses_the_market_trust_alpha_setting(high_alpha_world: MarketWorld) -> None:
    """A chain operator (pre-trusted) -> a -> b, one +1 each. The fixed point is t_o = alpha + (1-alpha) t_b,
    t_a = (1-alpha) t_o, t_b = (1-alpha) t_a: with alpha = 0.9 nearly all trust stays with the operator
    (the default 0.15 would give b a relative trust of 0.8426)."""
    w = high_alpha_world
    operator, a, b = await w.agent("operator"), await w.agent("agent-a"), await w.agent("agent-b")
    first = await w.completed(operator, a, 1000, "from a")
    assert (await w.rate(operator, first, 1)).status_code == 201
    second = await w.completed(a, b, 1000, "from b")
    assert (await w.rate(a, second, 1)).status_code == 201

    keep = 1 - 0.9
    t_o = 1 / (1 + keep + keep**2)
    expected = {operator.user_id: t_o, a.user_id: keep * t_o, b.user_id: keep**2 * t_o}
    for user_id, share in expected.items():
        figures = (await w.client.get(f"{API}/agents/{user_id}/reputation")).json()
        assert figures["trust"] == round(3 * share, 4), (user_id, figures)
    assert round(3 * expected[b.user_id], 4) == 0.027


# -- market_export_max_rows (exports.py), market_stats_cache_seconds and market_active_agent_days (stats.py)


@pytest.fixture
async def small_export_world(settings_for: Any) -> AsyncIterator[MarketWorld]:
    async for w in open_world(settings_for, market_export_max_rows=2):
        yield w


async def test_export_sections_hold_at_most_market_export_max_rows(small_export_world: MarketWorld) -> None:
    w = small_export_world
    alice = await w.agent("alice")
    titles = ["first lamp", "second lamp", "third lamp"]
    for title in titles:
        await sell(w, alice, title)
        w.clock.advance(1)
    data = (await w.client.get(f"{API}/agents/me/export", headers=alice.headers)).json()
    assert data["export"]["max_rows"] == 2
    assert "listings" in data["export"]["truncated"] and "offers" not in data["export"]["truncated"]
    assert [x["title"] for x in data["listings"]] == titles[:2]  # oldest first
    md = (await w.client.get(f"{API}/agents/me/export", headers=alice.headers, params={"format": "md"})).text
    assert "**truncated** (over 2 rows): " in md and "third lamp" not in md
    market = (await w.client.get(f"{API}/exports/market", headers=bearer(w.admin_token))).json()
    assert market["export"]["truncated"] == ["listings"] and len(market["listings"]) == 2


@pytest.fixture
async def stats_world(settings_for: Any) -> AsyncIterator[MarketWorld]:
    async for w in open_world(settings_for, market_stats_cache_seconds=60, market_active_agent_days=2):
        yield w


async def test_stats_cache_lasts_market_stats_cache_seconds(stats_world: MarketWorld) -> None:
    w = stats_world
    empty = (await w.client.get(f"{API}/stats")).json()
    alice = await w.agent("alice")
    await sell(w, alice, "a lamp")
    w.clock.advance(59)  # past the default 10 s, within the setting's 60
    assert (await w.client.get(f"{API}/stats")).json() == empty
    w.clock.advance(1)
    assert (await w.client.get(f"{API}/stats")).json()["active_listings"] == 1


async def test_active_agents_count_market_active_agent_days(stats_world: MarketWorld) -> None:
    w = stats_world
    alice = await w.agent("alice")
    await sell(w, alice, "a lamp")
    w.clock.advance(DAY)
    s = (await w.client.get(f"{API}/stats")).json()
    assert s["active_agents"] == 1 and s["active_agents_days"] == 2
    w.clock.advance(DAY + 1)  # alice last spoke over 2 days ago (the default counts 30)
    s = (await w.client.get(f"{API}/stats")).json()
    assert s["active_agents"] == 0 and s["agents"] == 1 and s["active_agents_days"] == 2
