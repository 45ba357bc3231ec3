"""core.reputation: score, positive percentage, the trusted badge, dispute resolutions, and the
EigenTrust trust score that a ring of colluding fresh accounts must not game."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clawlist.core.reputation import (
    DAY_MS,
    Counts,
    Rating,
    Resolution,
    at_fault,
    eigentrust,
    is_trusted,
    local_trust,
    positive_pct,
    rank,
    score,
    summarize,
    with_resolutions,
)

NOW = 1_800_000_000_000


def r(rater: str, ratee: str, rating: int = 1, amount: int = 1000, ts: int = NOW, deal: str = "") -> Rating:
    return Rating(rater, ratee, rating, amount, ts, deal)


# -- score and percentages ---------------------------------------------------------------------------


def test_score_counts_unique_counterparties() -> None:
    received = [
        r("a", "s"),
        r("a", "s"),
        r("a", "s"),  # three deals with a: one positive counterparty
        r("b", "s"),
        r("c", "s", -1),
        r("c", "s", -1),
        r("d", "s", 0),
        r("s", "s"),  # nobody rates themselves into a score
    ]
    assert score(received) == 2 - 1


def test_a_counterparty_with_both_ratings_counts_on_both_sides() -> None:
    assert score([r("a", "s", 1), r("a", "s", -1)]) == 0


def test_positive_percentage_leaves_neutral_out_and_looks_back_twelve_months() -> None:
    received = [
        r("a", "s", 1),
        r("b", "s", 1),
        r("c", "s", 1),
        r("d", "s", -1),
        r("e", "s", 0),
        r("f", "s", -1, ts=NOW - 366 * DAY_MS),  # older than a year: not in the percentage
    ]
    summary = summarize(received, NOW)
    assert summary.positive_pct_12m == 75.0
    assert summary.counts == Counts(3, 1, 2)
    assert summary.counts_12m == Counts(3, 1, 1)
    assert summary.score == 3 - 2
    assert positive_pct(Counts()) is None
    assert positive_pct(Counts(neutral=4)) is None
    assert summarize([], NOW).positive_pct_12m is None


def test_trusted_badge_needs_both_deals_and_positive_share() -> None:
    kw = {"min_deals": 10, "min_positive_pct": 95.0}
    assert is_trusted(10, 95.0, **kw)
    assert is_trusted(40, 100.0, **kw)
    assert not is_trusted(9, 100.0, **kw)
    assert not is_trusted(10, 94.9, **kw)
    assert not is_trusted(50, None, **kw)  # no rating at all is no evidence


# -- dispute resolutions -------------------------------------------------------------------------------


def test_resolution_blames_the_losing_party() -> None:
    refund = Resolution("d1", "buyer", "seller", "refund", 500, NOW)
    release = Resolution("d2", "buyer", "seller", "release", 500, NOW)
    split = Resolution("d3", "buyer", "seller", "split", 500, NOW)
    assert at_fault(refund) == ("buyer", "seller")
    assert at_fault(release) == ("seller", "buyer")
    assert at_fault(split) is None


def test_resolution_replaces_the_winners_rating_on_that_deal_only() -> None:
    ratings = [
        r("buyer", "seller", 1, deal="d1"),  # left before the moderator refunded: overridden
        r("seller", "buyer", -1, deal="d1"),  # the party at fault's own rating stays
        r("buyer", "seller", 1, deal="d0"),  # an earlier, good deal stays
    ]
    counted = with_resolutions(ratings, [Resolution("d1", "buyer", "seller", "refund", 700, NOW)])
    assert sorted((x.rater, x.ratee, x.rating, x.deal_id) for x in counted) == [
        ("buyer", "seller", -1, "d1"),
        ("buyer", "seller", 1, "d0"),
        ("seller", "buyer", -1, "d1"),
    ]
    # a resolution without rating adds the negative; a split changes nothing
    added = with_resolutions([], [Resolution("d9", "b", "s", "release", 10, NOW)])
    assert added == [Rating("s", "b", -1, 10, NOW, "d9")]
    assert with_resolutions(ratings, [Resolution("d1", "buyer", "seller", "split", 700, NOW)]) == ratings


# -- local trust ------------------------------------------------------------------------------------------


def test_local_trust_is_weighted_by_deal_value_clipped_and_normalised_per_rater() -> None:
    c = local_trust(
        [
            r("i", "a", 1, 300),
            r("i", "b", 1, 100),
            r("i", "c", -1, 1000),  # clipped: no negative trust
            r("i", "d", 1, 100),
            r("i", "d", -1, 200),  # net negative: clipped
            r("i", "e", 0, 5000),  # neutral: nothing
            r("j", "k", -1, 50),  # j trusts nobody: not a row
        ]
    )
    assert c == {"i": {"a": 0.75, "b": 0.25}}


# -- EigenTrust ---------------------------------------------------------------------------------------------


def test_trust_sums_to_one_and_converges() -> None:
    result = eigentrust([r("a", "b"), r("b", "c"), r("c", "a", 1, 5000), r("d", "a", -1)])
    assert result.converged
    assert set(result.scores) == {"a", "b", "c", "d"}
    assert sum(result.scores.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in result.scores.values())
    assert eigentrust([]).scores == {}


def _market(pretrusted: list[str], *, ring_deals: int = 5) -> list[Rating]:
    """An established honest seller, a ring of 10 fresh colluding accounts, and the wider market.

    - 2 pre-trusted agents (e.g. the operator's own accounts), who trade with the 12 buyers;
    - the honest seller sold one real item (50 credits) to each of 12 distinct buyers; both sides
      left +1;
    - the ring: 10 accounts each buying from each other `ring_deals` times at 1 credit, all +1.
    """
    ratings: list[Rating] = []
    buyers = [f"buyer{i:02d}" for i in range(12)]
    for n, buyer in enumerate(buyers):
        trusted = f"pre{n % 2}"
        if pretrusted:
            ratings += [r(trusted, buyer, 1, 3000), r(buyer, trusted, 1, 3000)]
        ratings += [r(buyer, "honest", 1, 5000), r("honest", buyer, 1, 5000)]
    ring = [f"ring{i}" for i in range(10)]
    for a, b in itertools.permutations(ring, 2):
        ratings += [r(a, b, 1, 100) for _ in range(ring_deals)]
    return ratings


RING = [f"ring{i}" for i in range(10)]


def test_a_ring_of_fresh_accounts_does_not_outrank_an_honest_seller_with_a_pretrusted_set() -> None:
    result = eigentrust(_market(["pre0", "pre1"]), pretrusted=["pre0", "pre1"])
    assert result.converged
    trust = result.relative()
    assert trust["honest"] > 1.0  # above average
    # nobody outside the ring vouches for it: its trust is nothing
    assert max(trust[x] for x in RING) < 1e-9
    order = rank(result.scores)
    assert order.index("honest") < min(order.index(x) for x in RING)
    # the ring looks better than the seller by the naive count: 9 partners each, many more deals
    assert score([x for x in _market([]) if x.ratee == "ring0"]) == 9
    assert sum(1 for x in _market([]) if x.ratee == "ring0") == 45 > 1


def test_a_star_of_sybils_pumping_one_account_gets_nothing_from_a_pretrusted_set() -> None:
    ratings = _market(["pre0", "pre1"], ring_deals=0)
    sybils = [f"sybil{i}" for i in range(50)]  # more sybils than the seller has buyers
    for s in sybils:
        ratings += [r(s, "pumped", 1, 10_000) for _ in range(20)] + [r("pumped", s, 1, 10_000)]
    trust = eigentrust(ratings, pretrusted=["pre0", "pre1"]).relative()
    assert trust["pumped"] < 1e-9 < trust["honest"]


def test_without_a_pretrusted_set_the_ring_still_ranks_below_the_honest_seller() -> None:
    """With p uniform over all rated agents, every agent starts with the same share a/N. A ring
    that only rates itself is a closed group: the trust flowing into it is only its own members'
    teleport share, so however many deals they make among themselves, each member ends with the
    average (relative trust 1.0). Ratings are normalised per rater, so many small deals do not
    add weight. The honest seller receives most of the trust of 12 distinct buyers: several
    times the average."""
    for ring_deals in (1, 5, 50):
        result = eigentrust(_market([], ring_deals=ring_deals))
        trust = result.relative()
        assert result.converged
        assert max(trust[x] for x in RING) == pytest.approx(1.0, abs=1e-6)
        assert trust["honest"] > 3.0
        assert rank(result.scores)[0] == "honest"


def test_a_tiny_deal_with_a_trusted_buyer_moves_little_trust_into_the_ring() -> None:
    """Deal value weighting: a buyer's one 1-credit purchase from a ring member weighs 1/50 of its
    50-credit purchase from the seller, so the ring gets a sliver of that buyer's trust."""
    for pretrusted in (["pre0", "pre1"], []):
        ratings = [*_market(pretrusted), r("buyer00", "ring0", 1, 100)]
        trust = eigentrust(ratings, pretrusted=pretrusted).relative()
        assert trust["honest"] > 3 * max(trust[x] for x in RING)


def test_negative_feedback_does_not_propagate_trust() -> None:
    ratings = [r("a", "b", 1), r("b", "a", 1), r("a", "c", -1), r("b", "c", -1)]
    trust = eigentrust(ratings, pretrusted=["a"]).scores
    assert trust["c"] == 0.0
    assert trust["a"] > 0 and trust["b"] > 0


def test_alpha_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        eigentrust([r("a", "b")], alpha=0.0)


def test_iteration_is_bounded() -> None:
    result = eigentrust(_market([]), max_iterations=3)
    assert result.iterations == 3 and not result.converged
    assert sum(result.scores.values()) == pytest.approx(1.0)


# -- properties ------------------------------------------------------------------------------------------

AGENTS = [f"a{i}" for i in range(8)]
rating_st = st.builds(
    Rating,
    rater=st.sampled_from(AGENTS),
    ratee=st.sampled_from(AGENTS),
    rating=st.sampled_from([-1, 0, 1]),
    amount=st.integers(1, 10**9),
    ts=st.integers(NOW - 800 * DAY_MS, NOW),
    deal_id=st.text("abc", max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(rating_st, max_size=60), st.lists(st.sampled_from(AGENTS), max_size=3))
def test_trust_is_a_distribution(ratings: list[Rating], pretrusted: list[str]) -> None:
    result = eigentrust(ratings, pretrusted=pretrusted)
    assert result.converged
    if result.scores:
        assert sum(result.scores.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in result.scores.values())


@settings(max_examples=100, deadline=None)
@given(st.lists(rating_st, max_size=40), st.integers(2, 1000), st.randoms(use_true_random=False))
def test_order_and_scale_of_amounts_do_not_matter(
    ratings: list[Rating], factor: int, rnd: random.Random
) -> None:
    base = eigentrust(ratings, pretrusted=["a0"]).scores
    shuffled = list(ratings)
    rnd.shuffle(shuffled)
    scaled = [Rating(x.rater, x.ratee, x.rating, x.amount * factor, x.ts, x.deal_id) for x in shuffled]
    again = eigentrust(scaled, pretrusted=["a0"]).scores
    assert again.keys() == base.keys()
    for k, v in base.items():
        assert again[k] == pytest.approx(v, abs=1e-9)


sybil_st = st.builds(
    Rating,
    rater=st.sampled_from([f"sybil{i}" for i in range(5)]),
    ratee=st.sampled_from([f"sybil{i}" for i in range(5)] + AGENTS),
    rating=st.sampled_from([-1, 0, 1]),
    amount=st.integers(1, 10**9),
    ts=st.just(NOW),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(rating_st, max_size=40), st.lists(sybil_st, min_size=1, max_size=60))
def test_accounts_nobody_trusts_change_nobodys_trust(honest: list[Rating], sybil: list[Rating]) -> None:
    """With a pre-trusted set, any number of ratings written by fresh accounts that no existing agent
    rated (about each other or about anyone) leaves every existing agent's trust as it was, and
    gives the fresh accounts nothing."""
    pretrusted = ["a0", "a1"]
    before = eigentrust(honest, pretrusted=pretrusted).scores
    after = eigentrust([*honest, *sybil], pretrusted=pretrusted).scores
    for k, v in before.items():
        assert after[k] == pytest.approx(v, abs=1e-8)
    for k in after.keys() - before.keys():
        if k.startswith("sybil"):
            assert after[k] == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(st.lists(rating_st, max_size=60))
def test_score_and_percentage_bounds(ratings: list[Rating]) -> None:
    for agent in AGENTS:
        received = [x for x in ratings if x.ratee == agent]
        summary = summarize(received, NOW)
        raters = {x.rater for x in received if x.rater != agent}
        assert -len(raters) <= summary.score <= len(raters)
        pct = summary.positive_pct_12m
        assert pct is None or 0.0 <= pct <= 100.0
        assert summary.counts_12m.total <= summary.counts.total
