"""Removal as a censored time: Kaplan-Meier medians over seeds, their intervals, and ratios of them.

Each run stores its removal as an interval on the attack's checkpoint schedule (`removal/lower`,
`removal/upper`, `removal/event`; see `bench.stats.removal_interval`): removed somewhere in
(lower, upper], or still detected at the last checkpoint (right-censored there). Seeds of one
configuration share the schedule, so the survival function S(t) = P(mark not yet removed at t) is
estimable exactly at the checkpoints: Kaplan-Meier on the upper ends (the first checkpoint seen
without the mark) with survivors censored at the last checkpoint (lifelines' `KaplanMeierFitter`,
Greenwood exponential interval). The median is the first checkpoint by which half the seeds have
lost the mark (the true median lies in the interval before it); it is infinite when more than half
survive. A ratio of two medians (RoMa's "32.83x more steps") gets the conservative interval
[lo_a / hi_b, hi_a / lo_b] from the two medians' 95% intervals.
"""
from __future__ import annotations

import math
import warnings

import numpy as np


def censored_times(intervals: list[dict]) -> tuple[list[float], list[bool]] | None:
    """(durations, events) for Kaplan-Meier from removal intervals; None if a budget is not numeric."""
    durations, events = [], []
    for iv in intervals:
        t = iv["upper"] if iv["event"] else iv["lower"]
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            return None
        durations.append(float(t))
        events.append(bool(iv["event"]))
    return durations, events


def km_median(durations: list[float], events: list[bool], alpha: float = 0.05) -> dict:
    """Kaplan-Meier median removal time and its (1 - alpha) interval (inf where not reached)."""
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    n, k = len(durations), int(sum(events))
    out = {"n": n, "n_removed": k, "median": math.inf, "ci_low": math.inf, "ci_high": math.inf}
    if n == 0:
        return out
    kmf = KaplanMeierFitter(alpha=alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kmf.fit(np.asarray(durations, dtype=float), np.asarray(events, dtype=bool))
        ci = median_survival_times(kmf.confidence_interval_)
    out["median"] = float(kmf.median_survival_time_)
    out["ci_low"], out["ci_high"] = (float(v) for v in np.asarray(ci).reshape(-1)[:2])
    return out


def ratio(a: dict, b: dict) -> dict:
    """median_a / median_b with the conservative interval from both medians' intervals."""
    def div(x: float, y: float) -> float:
        if y == 0:
            return math.inf
        if math.isinf(x) and math.isinf(y):
            return math.nan
        return x / y

    return {"ratio": div(a["median"], b["median"]), "ci_low": div(a["ci_low"], b["ci_high"]),
            "ci_high": div(a["ci_high"], b["ci_low"])}


def _num(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:g}"


def describe(km: dict, unit: str = "step") -> str:
    """'removed in 5/5 seeds, median step 7 (95% CI 5–10)' or 'survives in 5/5 seeds'."""
    n, k = km["n"], km["n_removed"]
    if k == 0:
        return f"survives in {n}/{n} seeds"
    if math.isinf(km["median"]):
        return f"removed in {k}/{n} seeds, median not reached (more than half survive)"
    return (f"removed in {k}/{n} seeds, median {unit} {_num(km['median'])} "
            f"(95% CI {_num(km['ci_low'])}–{_num(km['ci_high'])})")
