"""Verification: bit accuracy (bit methods), verification rate (every method), p-value and verdict for the watermarked model, every attack
checkpoint (robustness curve, steps-to-removal, removal budget) and the two null models (base, base + attack).

`steps_to_removal` is the first checkpoint id whose verdict is negative; `removal_budget` is the
attack budget at that checkpoint (the step for training attacks, the sparsity for pruning...).
With `align=activations` (off by default) the owner first aligns each suspect's hidden units to the
owner's watermarked model (`bench.permutation.align`: one assignment problem per permutable group,
on activations of `align_probes` of the owner's own inputs drawn from the query seed), then verifies
as before; each summary then carries what the alignment found (`align`: the fraction of units moved,
the matched units' mean activation correlation, seconds). Verifiers that read only outputs
(black-box) are not affected by a permutation, so they are not aligned.

Both are point readings of a censored quantity: `removal/lower`, `removal/upper` and
`removal/event` store it as an interval, (last checkpoint detected, first checkpoint not
detected], or right-censored at the last checkpoint when the mark survives; the leaderboard
estimates medians over seeds from these as interval-censored data (`bench.analysis.survival`).
"""
from __future__ import annotations

import torch

from bench.diffusion import generator, sample_noise_and_t, training_scheduler
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

    ALIGN = ("none", "activations")

    def __init__(self, n_queries: int = 8, target_fpr: float = 1e-3, query_fprs=(), align: str = "none",
                 align_probes: int = 8):
        require(n_queries >= 1, f"metrics.verification.n_queries must be at least 1 (got {n_queries}).")
        require(0 < target_fpr < 1, f"metrics.verification.target_fpr must be in (0, 1) (got {target_fpr}).")
        query_fprs = [float(f) for f in query_fprs]
        require(all(0 < f < 1 for f in query_fprs),
                f"metrics.verification.query_fprs must lie in (0, 1) (got {query_fprs}).")
        require(align in self.ALIGN, f"metrics.verification.align must be one of {list(self.ALIGN)} (got {align!r}): "
                "'activations' aligns a suspect's hidden units to the owner's model before verifying.")
        require(isinstance(align_probes, int) and align_probes >= 1,
                f"metrics.verification.align_probes must be a positive number of probe inputs (got {align_probes}).")
        self.n_queries, self.target_fpr, self.query_fprs = n_queries, target_fpr, query_fprs
        self.align, self.align_probes = align, align_probes

    def settings(self) -> dict:
        """As the base's, without the alignment's when it is off (so unaligned results keep their cache keys)."""
        s = super().settings()
        if self.align == "none":
            del s["align"], s["align_probes"]
        return s

    def probe(self, world, seed: int) -> dict:
        """The owner's probe inputs for alignment: `align_probes` noisy owner latents, timesteps and prompts."""
        owner, sched = world.encoded("owner"), training_scheduler(world.pipe)
        gen = generator(seed, "align-probe")
        latents, emb = owner.batch(torch.randint(0, len(owner), (self.align_probes,), generator=gen))
        noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, gen)
        return {"x": sched.add_noise(latents, noise, t), "t": t, "emb": emb}

    def aligned(self, ctx: EvalContext, ref: ModelRef, unet):
        """(the UNet to verify, what alignment found or None): `unet` aligned to the owner's watermarked model when
        alignment is on, the verifier reads internal features and `ref` is not the watermarked model itself."""
        if self.align == "none" or ctx.method.access != "white-box" or ref.address == ctx.watermarked.address:
            return unet, None
        from bench.permutation import align
        reference, _ = ctx.weights(ctx.watermarked)  # `unet` stays alive here though ctx forgets it
        return align(reference, unet, self.probe(ctx.world, ctx.seed))

    def verify_one(self, ctx: EvalContext, ref: ModelRef) -> dict:
        """The verification summary (`bench.stats.summarise`) of `ctx.key` on the model `ref`, with this collector's
        settings and `ctx.seed` as the query seed; cached per (model, key, settings, seed)."""
        key = {"model": ref.address, "key": ctx.key_address, "settings": self.settings(), "seed": ctx.seed}

        def compute() -> dict:
            with ctx.model(ref) as unet:
                unet, found = self.aligned(ctx, ref, unet)
                ev = ctx.method.verify(ctx.world, unet, ctx.key, self.n_queries, ctx.seed)
            return {**summarise(ev, self.target_fpr, self.query_fprs), **({"align": found} if found else {})}

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
        if "align" in final:  # what the owner's alignment found at the final checkpoint
            out["verify/attacked/align_moved"] = metric(final["align"]["moved"], None)
            out["verify/attacked/align_similarity"] = metric(final["align"]["similarity"], None)
            out["verify/attacked/align_seconds"] = metric(final["align"]["seconds"], False)
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
