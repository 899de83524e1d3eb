"""Removal as an interval-censored time, paired ratios of removal times, and both tails of the evidence.

Each run stores its removal as an interval on the attack's checkpoint schedule (`removal/lower`,
`removal/upper`, `removal/event`; see `bench.stats.removal_interval`): removed somewhere in
(lower, upper], or still detected at the last checkpoint (right-censored there). The functions below
summarise a row's seeds without pretending to know more than that interval (see the notes below).
"""
from __future__ import annotations

import math


def _num(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:g}"


# ---- interval-censored removal, paired ratios, two-sided evidence (what the tables report) ----------------------
#
# A seed's removal happened somewhere in (lower, upper]: `lower` the budget of the last checkpoint still detected,
# `upper` the first one not detected (inf for a mark that survives the last checkpoint). A mark that is not detected
# before any attack (`lower` None) is "not marked": it is left out of the removal statistics and counted apart,
# never a removal at step 0. The median removal time of the seeds' distribution is bracketed with order statistics
# of the interval ends: the m-th smallest time lies in (m-th smallest lower, m-th smallest upper], m = ceil(n / 2)
# (the first time by which half the seeds have lost the mark, as a Kaplan-Meier median reads; on a checkpoint
# schedule shared by the seeds this is exactly the Turnbull/NPMLE estimate's jump). Its interval is the
# distribution-free order-statistic interval (X(r), X(n-r+1)): it covers the median with probability
# 1 - 2 P(Binomial(n, 1/2) <= r - 1), exactly, whatever the distribution; r is the largest rank reaching 95%, and
# where no rank does (n <= 5) r = 1 and the coverage it has is stated (93.75% for n = 5).


def order_stat_rank(n: int, level: float = 0.95) -> tuple[int, float]:
    """(r, coverage) of the widest order-statistic interval for a median that reaches `level`, or r = 1 and its
    (lower) coverage where no rank reaches it."""
    from scipy.stats import binom

    best = (1, 1 - 2 * float(binom.cdf(0, n, 0.5))) if n else (1, 0.0)
    for r in range(1, n // 2 + 1):
        coverage = 1 - 2 * float(binom.cdf(r - 1, n, 0.5))
        if coverage >= level:
            best = (r, coverage)
    return best


def _bounds(iv: dict) -> tuple[float, float]:
    lower = float(iv["lower"])
    upper = float(iv["upper"]) if iv["event"] and iv["upper"] is not None else math.inf
    return lower, upper


def marked_only(intervals: list[dict]) -> tuple[list[dict], int]:
    """(intervals of marks detected before the attack, how many were not)."""
    kept = [iv for iv in intervals if iv.get("lower") is not None]
    return kept, len(intervals) - len(kept)


def interval_median(intervals: list[dict], level: float = 0.95) -> dict:
    """The median removal time of interval-censored removals (see above): its bracket (median_low, median_high],
    the order-statistic interval (ci_low, ci_high] and its exact coverage, counts of removed and not-marked seeds.
    None-valued budgets that are not numbers (quantisation formats) must be filtered out by the caller."""
    kept, not_marked = marked_only(intervals)
    n = len(kept)
    out = {"n": n, "n_removed": sum(bool(iv["event"]) for iv in kept), "n_not_marked": not_marked,
           "median_low": math.nan, "median_high": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "coverage": math.nan}
    if n == 0:
        return out
    lows = sorted(_bounds(iv)[0] for iv in kept)
    highs = sorted(_bounds(iv)[1] for iv in kept)
    m = math.ceil(n / 2)
    r, coverage = order_stat_rank(n, level)
    out.update(median_low=lows[m - 1], median_high=highs[m - 1], ci_low=lows[r - 1], ci_high=highs[n - r],
               coverage=coverage)
    return out


def paired_ratio(a: dict, b: dict, level: float = 0.95) -> dict:
    """The ratio of removal times of two methods over seeds they share (seed s of both draws the same key bits),
    from each seed's ratio bounds [lower_a / upper_b, upper_a / lower_b]: the median per-seed ratio's bracket and
    its order-statistic interval with its exact coverage (as `interval_median`). `a`, `b`: seed -> interval.
    Seeds where either mark was not there before the attack are left out."""
    def div(x: float, y: float) -> float:
        if y == 0 or math.isinf(x):
            return math.inf
        return 0.0 if math.isinf(y) else x / y

    seeds = sorted(s for s in set(a) & set(b) if a[s].get("lower") is not None and b[s].get("lower") is not None)
    lows, highs = [], []
    for s in seeds:
        (la, ua), (lb, ub) = _bounds(a[s]), _bounds(b[s])
        lows.append(div(la, ub))
        highs.append(div(ua, lb))
    n = len(seeds)
    out = {"n": n, "seeds": seeds, "median_low": math.nan, "median_high": math.nan, "ci_low": math.nan,
           "ci_high": math.nan, "coverage": math.nan}
    if n == 0:
        return out
    lows, highs = sorted(lows), sorted(highs)
    m = math.ceil(n / 2)
    r, coverage = order_stat_rank(n, level)
    out.update(median_low=lows[m - 1], median_high=highs[m - 1], ci_low=lows[r - 1], ci_high=highs[n - r],
               coverage=coverage)
    return out


def tails(point: dict) -> dict | None:
    """One-sided (upper: the verdict's test), lower-tail and two-sided binomial p-values of a verification (a
    robustness-curve point): matches of n bits against 1/2, or matching queries of n against p0. None when the
    point lacks the counts. A mark that is *inverted* (far fewer matches than chance) is strong lower-tail evidence
    of the key, not an erased mark: the tables report both tails."""
    from scipy.stats import binomtest

    k = point.get("matches")
    if point.get("n_bits"):
        n, p0 = point["n_bits"], 0.5
    elif point.get("null_match_prob") and point.get("n_queries"):
        n, p0 = point["n_queries"], point["null_match_prob"]
    else:
        return None
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= n:
        return None
    return {"upper": float(binomtest(k, n, p0, alternative="greater").pvalue),
            "lower": float(binomtest(k, n, p0, alternative="less").pvalue),
            "two_sided": float(binomtest(k, n, p0, alternative="two-sided").pvalue)}


def describe_interval(s: dict, unit: str = "step") -> str:
    """'removed in 4/5 seeds, median in (20, 30] steps (93.8% CI 10–∞)' or 'survives in 5/5 seeds'."""
    n, k = s["n"], s["n_removed"]
    extra = f"; {s['n_not_marked']} not marked before the attack" if s.get("n_not_marked") else ""
    if n == 0:
        return f"no marked seed{extra}"
    if k == 0:
        return f"survives in {n}/{n} seeds{extra}"
    if math.isinf(s["median_high"]):
        return f"removed in {k}/{n} seeds, median not reached (more than half survive){extra}"
    ci = f" ({s['coverage']:.1%} CI {_num(s['ci_low'])}–{_num(s['ci_high'])})" if s["coverage"] > 0 else ""
    return f"removed in {k}/{n} seeds, median {unit} in ({_num(s['median_low'])}, {_num(s['median_high'])}]{ci}{extra}"
