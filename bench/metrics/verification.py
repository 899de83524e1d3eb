"""Verification: bit accuracy (bit methods), verification rate (every method), p-value and verdict for the watermarked model, every attack
checkpoint (robustness curve, steps-to-removal, removal budget) and the two null models (base, base + attack).

`steps_to_removal` is the first checkpoint id whose verdict is negative; `removal_budget` is the
attack budget at that checkpoint (the step for training attacks, the sparsity for pruning...).
Both are point readings of a censored quantity: `removal/lower`, `removal/upper` and
`removal/event` store it as an interval, (last checkpoint detected, first checkpoint not
detected], or right-censored at the last checkpoint when the mark survives; the leaderboard
estimates medians over seeds from these with Kaplan-Meier (`bench.analysis.survival`).
"""
from __future__ import annotations

from bench.metrics.base import Collector, EvalContext, ModelRef, metric
from bench.stats import first_removal, removal_interval, summarise
from bench.errors import require


class Verification(Collector):
    name = "verification"
    version = "3"  # 3: removal interval, per-query rates at query_fprs, raw match counts and scores
    # "removal" is the leaderboard's interval-censored median of removal/lower, removal/upper and removal/event
    headline = (("verify/watermarked/bit_acc", "marked bit acc"),
                ("verify/watermarked/verification_rate", "marked verif."),
                ("verify/watermarked/detected", "marked detected"), ("verify/watermarked/p_value", "marked p"),
                ("verify/attacked/bit_acc", "attacked bit acc"),
                ("verify/attacked/verification_rate", "attacked verif."),
                ("verify/attacked/detected", "attacked detected"), ("removal", "removal (median, CI)"),
                ("false_positives", "false pos."))

    def __init__(self, n_queries: int = 8, target_fpr: float = 1e-3, query_fprs=()):
        require(n_queries >= 1, f"metrics.verification.n_queries must be at least 1 (got {n_queries}).")
        require(0 < target_fpr < 1, f"metrics.verification.target_fpr must be in (0, 1) (got {target_fpr}).")
        query_fprs = [float(f) for f in query_fprs]
        require(all(0 < f < 1 for f in query_fprs),
                f"metrics.verification.query_fprs must lie in (0, 1) (got {query_fprs}).")
        self.n_queries, self.target_fpr, self.query_fprs = n_queries, target_fpr, query_fprs

    def verify_one(self, ctx: EvalContext, ref: ModelRef) -> dict:
        """The verification summary (`bench.stats.summarise`) of `ctx.key` on the model `ref`, with this collector's
        settings and `ctx.seed` as the query seed; cached per (model, key, settings, seed)."""
        key = {"model": ref.address, "key": ctx.key_address, "settings": self.settings(), "seed": ctx.seed}

        def compute() -> dict:
            with ctx.model(ref) as unet:
                ev = ctx.method.verify(ctx.world, unet, ctx.key, self.n_queries, ctx.seed)
            return summarise(ev, self.target_fpr, self.query_fprs)

        value, _ = ctx.cache.get_or_compute_json("verify", self.version, key, compute)
        return value

    def _point(self, ctx: EvalContext, ref) -> dict:
        """One robustness-curve point for an attack checkpoint: its id,
        the budget the attack spent to reach it, and the verification summary."""
        return {"step": ref.step, "budget": ref.budget, "budget_label": ref.budget_label, **self.verify_one(ctx, ref)}

    def compute(self, ctx: EvalContext) -> dict:
        if not ctx.method.verifiable:  # nothing to verify (method=none)
            return {"metrics": {}, "curves": {}}
        out: dict = {}
        roles = {"watermarked": ctx.watermarked, "null_base": ctx.base}
        for role, ref in roles.items():
            s = self.verify_one(ctx, ref)
            out[f"verify/{role}/bit_acc"] = metric(s["bit_acc"], role == "watermarked")
            out[f"verify/{role}/verification_rate"] = metric(s["verification_rate"], role == "watermarked")
            out[f"verify/{role}/p_value"] = metric(s["p_value"], None)
            out[f"verify/{role}/detected"] = metric(s["detected"], role == "watermarked")
            for fpr in self.query_fprs:
                if f"query_rate@{fpr:g}" in s:
                    out[f"verify/{role}/query_rate@{fpr:g}"] = metric(s[f"query_rate@{fpr:g}"], role == "watermarked")
        curve = [self._point(ctx, r) for r in ctx.attacked]
        null_curve = [self._point(ctx, ctx.null_attacked[-1])]  # the null model's final checkpoint only: all any
        # figure reads (false positives; bench.tools.roc verifies more of it when it needs them)
        final, null_final = curve[-1], null_curve[-1]
        out["verify/attacked/bit_acc"] = metric(final["bit_acc"], True)
        out["verify/attacked/p_value"] = metric(final["p_value"], None)
        out["verify/attacked/detected"] = metric(final["detected"], True)
        out["verify/attacked/detection_rate"] = metric(final["detection_rate"], True)
        out["verify/attacked/verification_rate"] = metric(final["verification_rate"], True)
        out["verify/null_attacked/bit_acc"] = metric(null_final["bit_acc"], None)
        out["verify/null_attacked/verification_rate"] = metric(null_final["verification_rate"], None)
        out["verify/null_attacked/detected"] = metric(null_final["detected"], False)
        out["verify/null_attacked/p_value"] = metric(null_final["p_value"], None)
        for fpr in self.query_fprs:
            if f"query_rate@{fpr:g}" in final:
                out[f"verify/attacked/query_rate@{fpr:g}"] = metric(final[f"query_rate@{fpr:g}"], True)
        removal = first_removal(curve)
        interval = removal_interval(curve)
        out["removal/lower"] = metric(interval["lower"], None)
        out["removal/upper"] = metric(interval["upper"], None)
        out["removal/event"] = metric(interval["event"], False)
        out["steps_to_removal"] = metric(removal, True)
        out["removal_budget"] = metric(next((p["budget"] for p in curve if p["step"] == removal), None), True)
        out["survived_attack"] = metric(removal is None, True)
        out["false_positives"] = metric(int(out["verify/null_base/detected"]["value"]) + int(null_final["detected"]), False)
        return {"metrics": out, "curves": {"robustness": curve, "robustness_null": null_curve}}
