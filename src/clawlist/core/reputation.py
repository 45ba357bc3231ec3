"""Reputation from feedback. Pure: the caller reads the feedback and the dispute resolutions and
passes them in; nothing here does I/O.

Three figures per agent:

- score: unique counterparties who rated it +1 minus unique counterparties who rated it -1 (all
  time). Many deals with the same partner count once, so trading in circles adds little.
- positive % over the last 12 months: positive / (positive + negative) ratings received in the
  window, neutral ratings left out; None when there is none.
- trust: EigenTrust (Kamvar, Schlosser, Garcia-Molina 2003). Rater i's local trust in j is the sum
  of i's ratings of j weighted by each deal's amount, clipped at 0 and normalised over everyone i
  rated: c_ij = max(s_ij, 0) / sum_k max(s_ik, 0). Global trust is the fixed point of
  t = (1 - a) * C^T t + a * p, where p is uniform over the pre-trusted agents (uniform over every
  rated agent when there are none) and a rater who trusts nobody passes its trust on as p. So what
  an agent receives is what its raters hold themselves times the share of their deal value that
  went to it: accounts nobody trusted start with nothing to give, and many small deals inside a
  group move no trust out of it or into it.

A dispute resolution that finds a party at fault counts as the other party's -1 about it on that
deal (replacing whatever rating that party left on it): a refund finds the seller at fault, a
release the buyer (the dispute was unfounded), a split nobody.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

POSITIVE, NEUTRAL, NEGATIVE = 1, 0, -1
RATINGS = (NEGATIVE, NEUTRAL, POSITIVE)
DAY_MS = 86_400_000
#: "the last 12 months" of the positive percentage.
POSITIVE_WINDOW_MS = 365 * DAY_MS

#: EigenTrust's weight of the pre-trusted distribution in every step (PageRank's teleport).
DEFAULT_ALPHA = 0.15
#: The iteration stops when the L1 change of the trust vector is below this, or after max steps.
DEFAULT_TOLERANCE = 1e-10
DEFAULT_MAX_ITERATIONS = 300

REFUND, RELEASE, SPLIT = "refund", "release", "split"


@dataclass(frozen=True, slots=True)
class Rating:
    """One feedback: `rater` rated `ratee` on a deal of `amount` minor units at `ts` (ms)."""

    rater: str
    ratee: str
    rating: int  # -1 | 0 | +1
    amount: int
    ts: int
    deal_id: str = ""


@dataclass(frozen=True, slots=True)
class Resolution:
    """A resolved dispute: the moderator's outcome on a deal between `buyer` and `seller`."""

    deal_id: str
    buyer: str
    seller: str
    outcome: str  # refund | release | split
    amount: int
    ts: int


def at_fault(resolution: Resolution) -> tuple[str, str] | None:
    """(the party who was right, the party at fault), or None when the outcome blames nobody."""
    if resolution.outcome == REFUND:
        return resolution.buyer, resolution.seller
    if resolution.outcome == RELEASE:
        return resolution.seller, resolution.buyer
    return None


def with_resolutions(ratings: Iterable[Rating], resolutions: Iterable[Resolution]) -> list[Rating]:
    """The ratings reputation counts: each resolution that finds a party at fault is the other
    party's -1 about it on that deal, replacing the rating that party left there, if any."""
    faults: dict[str, Rating] = {}
    for res in resolutions:
        found = at_fault(res)
        if found is not None:
            right, wrong = found
            faults[res.deal_id] = Rating(right, wrong, NEGATIVE, res.amount, res.ts, res.deal_id)
    out = [
        r
        for r in ratings
        if not (
            r.deal_id in faults and r.rater == faults[r.deal_id].rater and r.ratee == faults[r.deal_id].ratee
        )
    ]
    out.extend(faults.values())
    return out


@dataclass(frozen=True, slots=True)
class Counts:
    positive: int = 0
    neutral: int = 0
    negative: int = 0

    @property
    def total(self) -> int:
        return self.positive + self.neutral + self.negative

    def as_dict(self) -> dict[str, int]:
        return {
            "positive": self.positive,
            "neutral": self.neutral,
            "negative": self.negative,
            "total": self.total,
        }


def _count(ratings: Iterable[Rating]) -> Counts:
    pos = neu = neg = 0
    for r in ratings:
        if r.rating > 0:
            pos += 1
        elif r.rating < 0:
            neg += 1
        else:
            neu += 1
    return Counts(pos, neu, neg)


@dataclass(frozen=True, slots=True)
class Summary:
    """What an agent's received ratings say, trust aside."""

    score: int
    counts: Counts
    counts_12m: Counts
    positive_pct_12m: float | None


def score(received: Iterable[Rating]) -> int:
    """Unique counterparties who gave a +1 minus unique counterparties who gave a -1."""
    positive: set[str] = set()
    negative: set[str] = set()
    for r in received:
        if r.rater == r.ratee:
            continue
        if r.rating > 0:
            positive.add(r.rater)
        elif r.rating < 0:
            negative.add(r.rater)
    return len(positive) - len(negative)


def positive_pct(counts: Counts) -> float | None:
    """positive / (positive + negative) in percent, or None with neither."""
    rated = counts.positive + counts.negative
    return None if rated == 0 else 100.0 * counts.positive / rated


def summarize(received: Iterable[Rating], now_ms: int, *, window_ms: int = POSITIVE_WINDOW_MS) -> Summary:
    """Score, counts and the 12-month positive percentage of the ratings an agent received."""
    mine = [r for r in received if r.rater != r.ratee]
    recent = [r for r in mine if r.ts > now_ms - window_ms]
    counts_12m = _count(recent)
    return Summary(score(mine), _count(mine), counts_12m, positive_pct(counts_12m))


def is_trusted(
    completed_deals: int, positive_pct_12m: float | None, *, min_deals: int, min_positive_pct: float
) -> bool:
    """The "trusted" badge: enough completed deals and a high enough positive percentage."""
    return (
        completed_deals >= min_deals and positive_pct_12m is not None and positive_pct_12m >= min_positive_pct
    )


# -- trust -------------------------------------------------------------------------------------------


def local_trust(ratings: Iterable[Rating]) -> dict[str, dict[str, float]]:
    """c_ij for every rater i: amount-weighted ratings of j, clipped at 0, normalised per rater.
    Raters whose sum is 0 (they rated nobody positively) are left out: they trust nobody."""
    sums: dict[str, dict[str, float]] = {}
    for r in ratings:
        if r.rater == r.ratee or r.rating == 0:
            continue
        row = sums.setdefault(r.rater, {})
        row[r.ratee] = row.get(r.ratee, 0.0) + r.rating * float(max(r.amount, 0))
    out: dict[str, dict[str, float]] = {}
    for rater, row in sums.items():
        kept = {j: v for j, v in row.items() if v > 0}
        total = sum(kept.values())
        if total > 0:
            out[rater] = {j: v / total for j, v in kept.items()}
    return out


@dataclass(frozen=True, slots=True)
class TrustResult:
    scores: dict[str, float]  # every agent in the graph; sums to 1
    iterations: int
    converged: bool

    def relative(self) -> dict[str, float]:
        """Trust times the number of agents in the graph: 1.0 is an average agent."""
        n = len(self.scores)
        return {k: v * n for k, v in self.scores.items()}


def eigentrust(
    ratings: Iterable[Rating],
    *,
    pretrusted: Iterable[str] = (),
    alpha: float = DEFAULT_ALPHA,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> TrustResult:
    """Global trust of every agent that rated, was rated, or is pre-trusted (see the module doc)."""
    if not 0 < alpha <= 1:
        raise ValueError("alpha must be in (0, 1]")
    ratings = list(ratings)
    c = local_trust(ratings)
    nodes: set[str] = set(pretrusted)
    for r in ratings:
        if r.rater != r.ratee:
            nodes.add(r.rater)
            nodes.add(r.ratee)
    if not nodes:
        return TrustResult({}, 0, True)
    order = sorted(nodes)
    pre = sorted(set(pretrusted))
    p: dict[str, float] = {k: 1.0 / len(pre) for k in pre} if pre else {k: 1.0 / len(order) for k in order}
    edges = [(i, row) for i, row in c.items()]
    t: dict[str, float] = {k: p.get(k, 0.0) for k in order}
    iterations, converged = 0, False
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - the count is returned
        propagated = dict.fromkeys(order, 0.0)
        given = 0.0
        for i, row in edges:
            ti = t[i]
            if ti == 0.0:
                continue
            given += ti
            for j, cij in row.items():
                propagated[j] += ti * cij
        # what those who trust nobody hold goes back to p, as does the alpha share of everyone's
        spread = (1.0 - alpha) * (sum(t.values()) - given) + alpha
        nxt = {k: (1.0 - alpha) * v for k, v in propagated.items()}
        for k, pk in p.items():
            nxt[k] += spread * pk
        total = sum(nxt.values())
        if total > 0:
            nxt = {k: v / total for k, v in nxt.items()}  # keeps float error from drifting
        delta = sum(abs(nxt[k] - t[k]) for k in order)
        t = nxt
        if delta < tolerance:
            converged = True
            break
    return TrustResult(t, iterations, converged)


def rank(scores: Mapping[str, float]) -> list[str]:
    """Agents from the most trusted down (ties by user id, for a stable order)."""
    return sorted(scores, key=lambda k: (-scores[k], k))
