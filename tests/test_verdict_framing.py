"""How verdicts are framed, against values computed by hand: removal as an interval-censored time (median bracket,
order-statistic interval and its exact coverage, marks absent before the attack counted apart), removal within
the utility budget at the removal checkpoint, the paired ratio of two methods' removal times, the two-sided
evidence beside the one-sided verdict, and intervals of [0, 1] metrics kept in [0, 1]."""
from __future__ import annotations

import math

from scipy import stats

from bench.analysis.aggregate import t_interval, table
from bench.analysis.leaderboard import survival_matrix
from bench.analysis.survival import interval_median, order_stat_rank, paired_ratio, tails
from tests.test_leaderboard import planned, record_from

INF = math.inf


def iv(lower, upper):
    return {"lower": lower, "upper": upper, "event": upper is not None}


def test_order_statistic_coverage_by_hand():
    assert order_stat_rank(5) == (1, 1 - 2 / 32)  # no rank reaches 95% at n = 5: the widest, 93.75%
    assert order_stat_rank(10) == (2, 1 - 2 * 11 / 1024)  # P(Bin(10, 1/2) <= 1) = 11/1024; r = 3 gives 89%
    assert order_stat_rank(3) == (1, 0.75)


def test_interval_censored_median_by_hand():
    seeds = [iv(0, 5), iv(5, 7), iv(5, 7), iv(7, 10), iv(20, None)]
    s = interval_median(seeds)
    # lowers 0 5 5 7 20, uppers 5 7 7 10 inf: the 3rd smallest removal time lies in (5, 7]
    assert (s["median_low"], s["median_high"]) == (5, 7)
    assert (s["ci_low"], s["ci_high"], s["coverage"]) == (0, INF, 1 - 2 / 32)
    assert (s["n"], s["n_removed"], s["n_not_marked"]) == (5, 4, 0)
    # a mark not detected before the attack is "not marked": never a removal at step 0
    s = interval_median([*seeds[:4], iv(None, 0)])
    assert (s["n"], s["n_removed"], s["n_not_marked"]) == (4, 4, 1)
    assert (s["median_low"], s["median_high"]) == (5, 7)  # 2nd of 4: lowers 0 5 5 7, uppers 5 7 7 10
    assert (s["ci_low"], s["ci_high"], s["coverage"]) == (0, 10, 1 - 2 / 16)
    assert math.isinf(interval_median([iv(0, 5), iv(20, None), iv(20, None)])["median_high"])


def test_paired_ratio_by_hand():
    roma = {0: iv(20, 30), 1: iv(30, 50), 2: iv(100, None), 3: iv(None, 0)}
    wdm = {0: iv(5, 10), 1: iv(5, 10), 2: iv(10, 20), 3: iv(5, 10)}
    r = paired_ratio(roma, wdm)
    # per seed [L_a / U_b, U_a / L_b]: [2, 6], [3, 10], [5, inf]; seed 3 was not marked: left out
    assert r["seeds"] == [0, 1, 2] and r["n"] == 3
    assert (r["median_low"], r["median_high"]) == (3, 10)
    assert (r["ci_low"], r["ci_high"], r["coverage"]) == (2, INF, 0.75)


def test_two_sided_evidence_by_hand():
    n, k = 48, 10
    lower = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    upper = sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n
    t = tails({"matches": k, "n_bits": n})
    assert math.isclose(t["lower"], lower, rel_tol=1e-9) and math.isclose(t["upper"], upper, rel_tol=1e-9)
    assert math.isclose(t["two_sided"], min(1.0, 2 * lower), rel_tol=1e-9)  # symmetric null: twice the smaller tail
    q = tails({"matches": 0, "n_queries": 16, "null_match_prob": 0.1})
    assert math.isclose(q["lower"], 0.9 ** 16, rel_tol=1e-9) and q["upper"] == 1.0
    assert tails({"matches": 3}) is None


def _budget_records():
    """Five seeds all lose the mark by step 7 (any removal); the model is useful there in only two of them."""
    budgets = (0, 5, 7, 10, 20)
    recs = []
    for s in range(5):
        rec = record_from(planned([f"seed={s}"]), upper=7, lower=5, curve_budgets=budgets)
        useful = s < 2
        rec["metrics"]["removal_useful/budget"] = {"value": 7 if useful else None, "higher_is_better": True}
        rec["metrics"]["survived_within_budget"] = {"value": not useful, "higher_is_better": True}
        for p in rec["curves"]["robustness"]:
            p.update(matches=10, n_bits=48)
        recs.append(rec)
    return recs


def test_within_budget_removal_is_the_verdict():
    recs = _budget_records()
    row = table(recs).iloc[0]
    assert row["removal/median"] == 7 and row["removal/n_removed"] == 5
    # within the budget: removed (5, 7] in 2 seeds, censored at the last checkpoint (20) in 3: median not reached
    assert row["removal_useful/n_removed"] == 2 and math.isinf(row["removal_useful/median"])
    text = survival_matrix(recs).iloc[0]["roma"]
    assert text.startswith("within the utility budget: removed in 2/5 seeds, median not reached (more than half "
                           "survive) (any removal: 5/5)")
    # 10 of 48 voted bits match in every seed: an inverted mark, reported with its lower-tail evidence
    lower = sum(math.comb(48, i) for i in range(11)) / 2 ** 48
    fisher = stats.chi2.sf(-2 * 5 * math.log(lower), 10)
    assert math.isclose(row["verify/attacked/p_lower/fisher"], fisher, rel_tol=1e-6)
    assert math.isclose(row["verify/attacked/p_lower/median"], lower, rel_tol=1e-9)
    assert "inverted after the attack: lower-tail Fisher p" in text


def test_a_schedule_of_names_is_judged_on_its_checkpoint_numbers():
    """A chain's checkpoints are names ('permute:all → lora_ft:step 300'), not amounts: the removal and the budget
    verdict are read on their positions along the schedule. By hand: every seed loses the mark at checkpoint 3
    (after 2 still detected); the model is useful there in seeds 0-2 only (seeds 3, 4 never within budget while
    undetected): removed 3/5 within budget, median checkpoint (2, 3], any removal 5/5 — not '5/5 removed'."""
    names = ("none", "permute:all", "permute:all → lora_ft:step 100", "permute:all → lora_ft:step 300",
             "permute:all → lora_ft:step 500")
    recs = []
    for s in range(5):
        rec = record_from(planned([f"seed={s}"]), upper=names[3], lower=names[2], curve_budgets=names)
        rec["metrics"]["removal_useful/budget"] = {"value": names[3] if s < 3 else None, "higher_is_better": True}
        recs.append(rec)
    row = table(recs).iloc[0]
    assert row["removal/ordinal"] and row["removal/n_removed"] == 5 and row["removal/n_marked"] == 5
    assert (row["removal/median_low"], row["removal/median"]) == (2, 3)
    assert row["removal_useful/n_removed"] == 3 and row["removal_useful/median"] == 3
    text = survival_matrix(recs).iloc[0]["roma"]
    assert text.startswith("within the utility budget: removed in 3/5 seeds, median checkpoint in (2, 3]")
    assert "(any removal: 5/5)" in text and "checkpoint 3: permute:all → lora_ft:step 300" in text
    from bench.analysis.tables import cell
    assert cell(row, "removal").startswith("checkpoint (2, 3]")
    # seeds that ran different schedules have no shared order: no removal columns rather than a wrong one
    recs[0]["curves"]["robustness"] = recs[0]["curves"]["robustness"][:4]
    assert "removal/median" not in table(recs).columns


def test_intervals_of_rates_stay_in_their_range():
    values = [1.0, 1.0, 0.6, 1.0, 0.9]
    mean, sd, lo, hi = t_interval(values, (0.0, 1.0))
    half = stats.t.ppf(0.975, 4) * sd / math.sqrt(5)
    assert mean == 0.9 and hi == 1.0 and math.isclose(lo, 0.9 - half) and 0.9 + half > 1
    recs = [record_from(planned([f"seed={s}"]), bit_acc=v) for s, v in enumerate(values)]
    row = table(recs).iloc[0]
    assert row["verify/attacked/bit_acc/ci_high"] == 1.0 and math.isclose(row["verify/attacked/bit_acc/ci_low"], lo)


def test_budget_is_checked_at_the_removal_checkpoint_with_fid_measured_there():
    """Utility.finalise by hand: the mark is first undetected at step 10, within the loss budget there, but FID at
    step 10 is 40 > 10 + 25 (measured there, not at the final checkpoint); step 20 is undetected, within the loss
    budget and FID 30 <= 35: the removal within budget is step 20. Against the base model (loss 1.0, FID 4) the
    loss budget allows 1.1, so step 20 (loss 1.15) does not count and the base-relative removal is step 50."""
    from types import SimpleNamespace

    from bench.metrics.base import ModelRef
    from bench.metrics.utility import Utility

    steps = [0, 10, 20, 50]
    refs = [ModelRef(f"m{s}", step=s, budget=s) for s in steps]
    fid_by_step = {0: 10.0, 10: 40.0, 20: 30.0, 50: 12.0}
    asked = []

    class FIDAt:  # the FID collector's interface: one FID per model (a table here, measured by the real one)
        def fid(self, ctx, ref):
            asked.append(ref.step)
            return fid_by_step[ref.step]

    ctx = SimpleNamespace(collectors={"fid": FIDAt()}, attacked=refs)
    u = Utility(max_owner_loss_ratio=1.1, max_fid_increase=25.0)
    losses = {0: 1.05, 10: 1.1, 20: 1.15, 50: 1.08}  # watermarked model's owner loss 1.05: budget 1.155
    curve = [{"step": s, "useful": losses[s] <= 1.1 * 1.05, "useful_base": losses[s] <= 1.1 * 1.0} for s in steps]
    robustness = [{"step": s, "budget": s, "detected": s == 0} for s in steps]
    metrics = {"fid/watermarked": {"value": 10.0}, "fid/base": {"value": 4.0}, "fid/attacked": {"value": 12.0}}
    out = u.finalise(metrics, {"utility": curve, "robustness": robustness}, ctx)
    assert out["removal_useful/step"]["value"] == 20 and out["survived_within_budget"]["value"] is False
    assert out["removal_useful/fid_increase"]["value"] == 20.0
    assert out["removal_useful_base/step"]["value"] == 50  # step 10: FID 40 > 4 + 25; step 20: loss 1.15 > 1.1
    assert out["utility/attacked/useful"]["value"] is True and out["utility/attacked/fid_increase"]["value"] == 2.0
    assert sorted(set(asked)) == [10, 20]  # the final checkpoint's FID is the collector's own; 0 was detected
    assert [p.get("fid") for p in curve] == [None, 40.0, 30.0, 12.0]  # every FID measured is on the curve
    # without FID in the run, the loss budget alone decides (the first undetected checkpoint within it)
    out = u.finalise({}, {"utility": [dict(p) for p in curve], "robustness": robustness}, None)
    assert out["removal_useful/step"]["value"] == 10 and out["removal_useful/fid_increase"]["value"] is None
