"""The attacker's utility at every attack checkpoint, and the utility budget a removal must respect.

Two cheap numbers per checkpoint, each the ordinary denoising loss with noise and timesteps fixed
by the seed (common random numbers, so checkpoints differ only by their weights):

* `owner_loss`: on the first `n_items` owner-domain hold-out items (`data.holdout`) – the
  quality the owner cares about;
* `attacker_loss`: on the first `n_items` attacker-domain items no attack trains on
  (`data.attacker_holdout`) – what the attacker fine-tunes for. `attacker_gain` is
  1 - attacker_loss / attacker_loss(watermarked): the fraction of its loss the attack removed.

A removal counts only inside the **utility budget**, checked at the checkpoint where the mark is
first not detected (the removal checkpoint), relative to the watermarked model:

* owner_loss <= `max_owner_loss_ratio` x the watermarked model's, and
* when the FID collector runs, FID <= the watermarked model's FID + `max_fid_increase`, with FID
  measured *at that checkpoint* (one more FID for a removal before the final checkpoint; if it
  fails, the next undetected checkpoint within the loss budget is tried, and so on).

`finalise` turns the robustness curve (from `verification`) and these figures into
`removal_useful/*` (the first removal within budget), `survived_within_budget` and
`utility/attacked/useful` (the final checkpoint within budget). The same verdict relative to the
**base model** (owner_loss and FID against the unmarked model's) is `removal_useful_base/*` and
`survived_within_budget_base`: an attacker who only needs a model as good as the public one the
owner started from.
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
    version = "2"  # 2: the budget at the removal checkpoint with FID measured there, and against the base model

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

    def _curve(self, ctx: EvalContext, refs: list[ModelRef], reference: dict, base: dict | None = None) -> list[dict]:
        points = []
        for ref in refs:
            v = self.losses(ctx, ref)
            point = {"step": ref.step, "budget": ref.budget, "budget_label": ref.budget_label, **v,
                     "owner_loss_ratio": v["owner_loss"] / reference["owner_loss"],
                     "attacker_gain": 1 - v["attacker_loss"] / reference["attacker_loss"],
                     "useful": v["owner_loss"] <= self.max_owner_loss_ratio * reference["owner_loss"]}
            if base is not None:
                point["owner_loss_ratio_base"] = v["owner_loss"] / base["owner_loss"]
                point["useful_base"] = v["owner_loss"] <= self.max_owner_loss_ratio * base["owner_loss"]
            points.append(point)
        return points

    def compute(self, ctx: EvalContext) -> dict:
        wm, base = self.losses(ctx, ctx.watermarked), self.losses(ctx, ctx.base)
        curve = self._curve(ctx, ctx.attacked, wm, base)
        null_curve = self._curve(ctx, ctx.null_attacked[-1:], base)  # the final checkpoint: all a figure reads
        final = curve[-1]
        out = {"utility/base/owner_loss": metric(base["owner_loss"], False),
               "utility/watermarked/owner_loss": metric(wm["owner_loss"], False),
               "utility/watermarked/owner_loss_ratio_base": metric(wm["owner_loss"] / base["owner_loss"], None),
               "utility/watermarked/attacker_loss": metric(wm["attacker_loss"], False),
               "utility/attacked/owner_loss": metric(final["owner_loss"], False),
               "utility/attacked/owner_loss_ratio": metric(final["owner_loss_ratio"], False),
               "utility/attacked/owner_loss_ratio_base": metric(final["owner_loss_ratio_base"], False),
               "utility/attacked/attacker_loss": metric(final["attacker_loss"], False),
               "utility/attacked/attacker_gain": metric(final["attacker_gain"], True),
               "utility/null_attacked/attacker_gain": metric(null_curve[-1]["attacker_gain"], None)}
        return {"metrics": out, "curves": {"utility": curve, "utility_null": null_curve}}

    def _fid_ok(self, fid: float | None, reference: float | None) -> bool | None:
        if fid is None or reference is None:
            return None
        return self.max_fid_increase is None or fid <= reference + self.max_fid_increase

    def finalise(self, metrics: dict, curves: dict, ctx: EvalContext | None = None) -> dict:
        """Removal within the utility budget at the removal checkpoint, from the robustness curve, the utility curve
        and FID (measured at each candidate checkpoint through the FID collector, when the run has one)."""
        value = lambda k: metrics.get(k, {}).get("value")  # noqa: E731
        fid_wm, fid_base, fid_att = value("fid/watermarked"), value("fid/base"), value("fid/attacked")
        fid_collector = (ctx.collectors.get("fid") if ctx is not None else None) if fid_wm is not None else None
        points = {p["step"]: p for p in curves["utility"]}
        last = curves["utility"][-1]["step"]
        fids = {last: fid_att} if fid_att is not None else {}

        def fid_at(step) -> float | None:
            if step not in fids and fid_collector is not None:
                ref = next(r for r in ctx.attacked if r.step == step)
                fids[step] = fid_collector.fid(ctx, ref)
            return fids.get(step)

        out = {}
        if fid_att is not None and fid_wm is not None:
            out["utility/attacked/fid_increase"] = metric(fid_att - fid_wm, False)
        out["utility/attacked/useful"] = metric(points[last]["useful"] and self._fid_ok(fid_att, fid_wm) is not False,
                                                True)
        robustness = curves.get("robustness")
        if not robustness:  # no verifier (method=none)
            return out
        for suffix, useful_key, fid_reference in (("", "useful", fid_wm), ("_base", "useful_base", fid_base)):
            first = None
            for p in robustness:
                if p["detected"] or not points[p["step"]].get(useful_key, False):
                    continue
                fid = fid_at(p["step"]) if fid_reference is not None else None
                if self._fid_ok(fid, fid_reference) is not False:
                    first = {**p, "fid": fid}
                    break
            out[f"removal_useful{suffix}/step"] = metric(first["step"] if first else None, True)
            out[f"removal_useful{suffix}/budget"] = metric(first["budget"] if first else None, True)
            if suffix == "":
                out["removal_useful/fid_increase"] = metric(
                    None if first is None or first["fid"] is None else first["fid"] - fid_wm, None)
            out[f"survived_within_budget{suffix}"] = metric(first is None, True)
        for step, fid in sorted(fids.items()):
            points[step]["fid"] = fid  # the utility curve shows every FID measured along it
        return out
