"""Verification statistics: exact binomial p-values, thresholds, and calibration under the null."""
from __future__ import annotations

import torch

from bench.stats import binomial_p_value, first_removal, match_threshold, summarise
from methods.base import Evidence


def test_binomial_p_values():
    assert binomial_p_value(0, 16) == 1.0
    assert abs(binomial_p_value(16, 16) - 2 ** -16) < 1e-12
    assert abs(binomial_p_value(8, 16) - 0.5981903076171875) < 1e-12  # sum_{k>=8} C(16,k) / 2^16


def test_match_threshold_matches_sleepermark_rule():
    # SleeperMark: 48 bits at FPR 1e-6 need at least 41 matching bits.
    assert match_threshold(48, 1e-6) == 41
    assert match_threshold(4, 1e-3) == 5  # unreachable: no k qualifies


def test_summarise_perfect_and_inverted_evidence():
    bits = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(0))
    perfect = summarise(Evidence("bits", decoded=bits.repeat(5, 1), bits=bits), 1e-3)
    assert perfect["bit_acc"] == 1.0 and perfect["detected"] and perfect["p_value"] < 1e-18
    inverted = summarise(Evidence("bits", decoded=(1 - bits).repeat(5, 1), bits=bits), 1e-3)
    assert inverted["bit_acc"] == 0.0 and not inverted["detected"]


def test_false_positive_rate_is_calibrated_even_for_constant_outputs():
    """A null model that always outputs the same bits: over many random keys, FPR <= target."""
    target, n_keys = 0.05, 2000
    constant = torch.zeros(3, 32, dtype=torch.long)  # three identical queries
    gen = torch.Generator().manual_seed(1)
    hits = sum(summarise(Evidence("bits", decoded=constant, bits=torch.randint(0, 2, (32,), generator=gen)),
                         target)["detected"] for _ in range(n_keys))
    assert hits / n_keys <= target + 3 * (target * (1 - target) / n_keys) ** 0.5


def test_first_removal():
    curve = [{"step": 0, "detected": True}, {"step": 10, "detected": True}, {"step": 20, "detected": False}]
    assert first_removal(curve) == 20
    assert first_removal(curve[:2]) is None


def test_overdispersed_null_is_the_beta_binomial_tail():
    """Evidence with null_overdispersion: P(K >= k) under a beta-binomial with mean p0 and intra-model correlation rho,
    summed here from its pmf C(n, j) B(j + a, n - j + b) / B(a, b); without it, the binomial tail (much smaller)."""
    import math

    import torch

    from bench.stats import summarise
    from methods.base import Evidence
    n, k, p0, rho = 16, 13, 0.076, 0.15
    a, b = p0 * (1 - rho) / rho, (1 - p0) * (1 - rho) / rho
    lbeta = lambda x, y: math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)  # noqa: E731
    tail = sum(math.comb(n, j) * math.exp(lbeta(j + a, n - j + b) - lbeta(a, b)) for j in range(k, n + 1))
    matches = torch.tensor([True] * k + [False] * (n - k))
    s = summarise(Evidence("scores", matches=matches, scores=matches.float(), null_match_prob=p0,
                           null_overdispersion=rho), 1e-3)
    assert math.isclose(s["p_value"], tail, rel_tol=1e-9) and s["null_overdispersion"] == rho
    plain = summarise(Evidence("scores", matches=matches, scores=matches.float(), null_match_prob=p0), 1e-3)
    assert plain["p_value"] < s["p_value"] / 100 and "null_overdispersion" not in plain
