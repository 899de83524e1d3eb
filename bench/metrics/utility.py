"""The attacker's utility at every attack checkpoint, and the utility budget a removal must respect.

Two cheap numbers per checkpoint, each the ordinary denoising loss with noise and timesteps fixed
by the seed (common random numbers, so checkpoints differ only by their weights):

* `owner_loss`: on the first `n_items` owner-domain hold-out items (`data.holdout`) – the
  quality the owner cares about;
* `attacker_loss`: on the first `n_items` attacker-domain items no attack trains on
  (`data.attacker_holdout`) – what the attacker fine-tunes for. `attacker_gain` is
  1 - attacker_loss / attacker_loss(watermarked): the fraction of its loss the attack removed.

A removal counts only inside the **utility budget**: at the checkpoint where the mark is first
not detected, owner_loss <= `max_owner_loss_ratio` x the watermarked model's, and, at the final
checkpoint (where FID is measured, when the FID collector runs), FID <= the watermarked model's
FID + `max_fid_increase`. `finalise` turns the robustness curve (from `verification`) and these
losses into `removal_useful/*` (the first removal within budget) and `utility/attacked/useful`.
"""
from __future__ import annotations

import torch

from bench.diffusion import denoising_loss, generator, sample_noise_and_t, training_scheduler
from bench.metrics.base import Collector, EvalContext, ModelRef, metric
from bench.errors import require


class Utility(Collector):
    name = "utility"
    headline = (("utility/attacked/owner_loss_ratio", "owner loss ratio"),
                ("utility/attacked/attacker_gain", "attacker gain"))
    version = "1"

    def __init__(self, n_items: int = 256, batch: int = 128, max_owner_loss_ratio: float = 1.1,
                 max_fid_increase: float | None = 25.0):
        require(n_items >= 1, f"metrics.utility.n_items must be at least 1 (got {n_items}).")
        require(batch >= 1, f"metrics.utility.batch must be at least 1 (got {batch}).")
        require(max_owner_loss_ratio >= 1, f"metrics.utility.max_owner_loss_ratio must be at least 1 (got "
                f"{max_owner_loss_ratio}); 1.1 allows the owner-domain loss to rise by 10%.")
        require(max_fid_increase is None or max_fid_increase >= 0,
                f"metrics.utility.max_fid_increase must be non-negative or null (got {max_fid_increase}).")
        self.n_items, self.batch = n_items, batch
        self.max_owner_loss_ratio, self.max_fid_increase = max_owner_loss_ratio, max_fid_increase

    def settings(self) -> dict:
        """Only what the losses depend on: the budget is applied afterwards, and changing it re-uses them."""
        return {"n_items": self.n_items, "batch": self.batch}

    @torch.no_grad()
    def losses(self, ctx: EvalContext, ref: ModelRef) -> dict:
        """{"owner_loss", "attacker_loss"} of model `ref` (cached per model)."""
        key = {"model": ref.address, "settings": self.settings(), "seed": ctx.seed, "data": ctx.data_key}

        def compute() -> dict:
            sched = training_scheduler(ctx.world.pipe)
            out = {}
            with ctx.model(ref) as unet:
                dtype = next(unet.parameters()).dtype
                for role, split in (("owner_loss", "holdout"), ("attacker_loss", "attacker_holdout")):
                    data = ctx.world.encoded(split)
                    n = min(self.n_items, len(data))
                    gen = generator(ctx.seed, "utility", split)
                    total = 0.0
                    for start in range(0, n, self.batch):
                        latents, emb = data.batch(range(start, min(n, start + self.batch)))
                        noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, gen)
                        loss = denoising_loss(unet, sched, latents.to(dtype), noise.to(dtype), t, emb.to(dtype),
                                              reduce=False)
                        total += float(loss.sum())
                    out[role] = total / n
            return out

        return ctx.cache.get_or_compute_json("utility", self.version, key, compute)[0]

    def _curve(self, ctx: EvalContext, refs: list[ModelRef], reference: dict) -> list[dict]:
        points = []
        for ref in refs:
            v = self.losses(ctx, ref)
            points.append({"step": ref.step, "budget": ref.budget, "budget_label": ref.budget_label, **v,
                           "owner_loss_ratio": v["owner_loss"] / reference["owner_loss"],
                           "attacker_gain": 1 - v["attacker_loss"] / reference["attacker_loss"],
                           "useful": v["owner_loss"] <= self.max_owner_loss_ratio * reference["owner_loss"]})
        return points

    def compute(self, ctx: EvalContext) -> dict:
        wm, base = self.losses(ctx, ctx.watermarked), self.losses(ctx, ctx.base)
        curve = self._curve(ctx, ctx.attacked, wm)
        null_curve = self._curve(ctx, ctx.null_attacked, base)
        final = curve[-1]
        out = {"utility/base/owner_loss": metric(base["owner_loss"], False),
               "utility/watermarked/owner_loss": metric(wm["owner_loss"], False),
               "utility/watermarked/attacker_loss": metric(wm["attacker_loss"], False),
               "utility/attacked/owner_loss": metric(final["owner_loss"], False),
               "utility/attacked/owner_loss_ratio": metric(final["owner_loss_ratio"], False),
               "utility/attacked/attacker_loss": metric(final["attacker_loss"], False),
               "utility/attacked/attacker_gain": metric(final["attacker_gain"], True),
               "utility/null_attacked/attacker_gain": metric(null_curve[-1]["attacker_gain"], None)}
        return {"metrics": out, "curves": {"utility": curve, "utility_null": null_curve}}

    def finalise(self, metrics: dict, curves: dict) -> dict:
        """Removal within the utility budget, from the robustness curve and the utility curve (and FID)."""
        value = lambda k: metrics.get(k, {}).get("value")  # noqa: E731
        fid_wm, fid_att = value("fid/watermarked"), value("fid/attacked")
        fid_ok = None
        if fid_wm is not None and fid_att is not None:
            fid_ok = self.max_fid_increase is None or fid_att <= fid_wm + self.max_fid_increase
        out = {}
        if fid_ok is not None:
            out["utility/attacked/fid_increase"] = metric(fid_att - fid_wm, False)
        final_useful = curves["utility"][-1]["useful"] and fid_ok is not False
        out["utility/attacked/useful"] = metric(final_useful, True)
        robustness = curves.get("robustness")
        if not robustness:  # no verifier (method=none)
            return out
        useful = {p["step"]: p["useful"] for p in curves["utility"]}
        last = robustness[-1]["step"]
        hits = [p for p in robustness
                if not p["detected"] and useful[p["step"]] and (p["step"] != last or fid_ok is not False)]
        first = hits[0] if hits else None
        out["removal_useful/step"] = metric(first["step"] if first else None, True)
        out["removal_useful/budget"] = metric(first["budget"] if first else None, True)
        out["survived_within_budget"] = metric(first is None, True)
        return out
