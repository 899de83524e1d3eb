"""Verification statistics, shared by all methods: evidence in, bit accuracy / p-value / verdict out.

Bits: each query's decoded bits are compared to the owner's. The model-level test takes the
majority vote of each bit over the queries and applies an exact one-sided binomial test:
under the null (a model that never saw the key), the voted bits are a function of the model
alone and the key is uniform, so the number of matches is Binomial(n_bits, 1/2) exactly, even
if every query returns the same image. Per query, a query "detects" when its matches reach the
smallest k with P(Binomial(n_bits, 1/2) >= k) <= target FPR (SleeperMark's TPR@FPR rule).
"""
from __future__ import annotations

import math

from scipy.stats import betabinom, binom

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the statistics read evidence; they never import the plugins
    from methods.base import Evidence


def binomial_p_value(matches: int, n: int) -> float:
    """P(X >= matches) for X ~ Binomial(n, 1/2)."""
    return float(binom.sf(matches - 1, n, 0.5))


def match_threshold(n: int, target_fpr: float) -> int:
    """Smallest k with P(Binomial(n, 1/2) >= k) <= target_fpr (n + 1 when no k qualifies)."""
    for k in range(n + 1):
        if binomial_p_value(k, n) <= target_fpr:
            return k
    return n + 1


def summarise(ev: Evidence, target_fpr: float, query_fprs=()) -> dict:
    """p_value, detected (model-level verdict) and verification_rate (per query), plus bit_acc for bits.

    For bits, `query_fprs` adds `query_rate@<fpr>`: the fraction of queries whose own matches reach the
    per-query threshold at that FPR (SleeperMark's TPR@1e-6 is `query_rate@1e-06` on a marked model)."""
    if ev.kind == "scores":
        return _summarise_scores(ev, target_fpr)
    if ev.kind != "bits":
        raise ValueError(f"unsupported evidence kind {ev.kind!r}")
    decoded, bits = ev.decoded.long(), ev.bits.long().view(1, -1)
    n_queries, n_bits = decoded.shape
    per_query = (decoded == bits).sum(dim=1)
    voted = (decoded.float().mean(dim=0) > 0.5).long()
    matches = int((voted == bits[0]).sum())
    p = binomial_p_value(matches, n_bits)
    k = match_threshold(n_bits, target_fpr)
    return {
        "bit_acc": float(per_query.float().mean() / n_bits),
        "p_value": p,
        "log10_p": math.log10(max(p, 1e-300)),
        "detected": bool(p <= target_fpr),
        "detection_rate": float((per_query >= k).float().mean()),
        "verification_rate": float((per_query >= k).float().mean()),
        "n_queries": n_queries,
        "n_bits": n_bits,
        "matches": matches,
        **{f"query_rate@{fpr:g}": float((per_query >= match_threshold(n_bits, fpr)).float().mean())
           for fpr in query_fprs},
    }


def _summarise_scores(ev: Evidence, target_fpr: float) -> dict:
    matches = ev.matches.bool().view(-1)
    p0 = float(ev.null_match_prob)
    if not 0 < p0 < 1:
        raise ValueError(f"null_match_prob must be in (0, 1), got {p0}")
    n, k, rho = len(matches), int(matches.sum()), ev.null_overdispersion
    if rho is None:
        p = float(binom.sf(k - 1, n, p0))
    else:  # beta-binomial: per-model rates vary around p0 (Evidence)
        if not 0 < rho < 1:
            raise ValueError(f"null_overdispersion must be in (0, 1), got {rho}")
        p = float(betabinom.sf(k - 1, n, p0 * (1 - rho) / rho, (1 - p0) * (1 - rho) / rho))
    return {
        "bit_acc": None,
        "p_value": p,
        "log10_p": math.log10(max(p, 1e-300)),
        "detected": bool(p <= target_fpr),
        "detection_rate": float(matches.float().mean()),
        "verification_rate": float(matches.float().mean()),
        "mean_score": float(ev.scores.float().mean()) if ev.scores is not None else None,
        "scores": [round(float(x), 6) for x in ev.scores.float()] if ev.scores is not None else None,
        "null_match_prob": p0,
        **({"null_overdispersion": rho} if rho is not None else {}),
        "n_queries": n,
        "matches": k,
    }


def first_removal(curve: list[dict]) -> int | None:
    """The first checkpoint step whose verdict is negative (None if detected throughout)."""
    for point in curve:
        if not point["detected"]:
            return point["step"]
    return None


def removal_interval(curve: list[dict]) -> dict:
    """The removal time as a censored observation on the checkpoint schedule, in budget units.

    Removed: it happened in (lower, upper], lower the budget of the last checkpoint detected before
    the first negative verdict, upper that checkpoint's budget (lower is None when even the unattacked
    model is not detected). Survived: right-censored at the last checkpoint (`lower` = its budget,
    `upper` None)."""
    for i, point in enumerate(curve):
        if not point["detected"]:
            return {"lower": curve[i - 1]["budget"] if i > 0 else None, "upper": point["budget"], "event": True}
    return {"lower": curve[-1]["budget"], "upper": None, "event": False}
