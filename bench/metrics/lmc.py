"""Linear mode connectivity barrier between two models along the straight line in weight space.

For A, B and a loss L: L(theta_lambda) with theta_lambda = (1 - lambda) A + lambda B at K evenly
spaced lambda in [0, 1]; barrier = max_lambda [L(theta_lambda) - ((1 - lambda) L(A) + lambda L(B))].
Both the method's watermark loss and the denoising (task) loss on held-out clean data are
evaluated with the same noise and timesteps at every lambda (common random numbers). Pairs:
watermarked -> attacked (is the attacked model in the watermark's basin?) and base -> watermarked
(RoMa's "watermark-connected path").
"""
from __future__ import annotations

import torch

from bench.diffusion import denoising_loss, generator, sample_noise_and_t, training_scheduler
from bench.metrics.base import Collector, EvalContext, ModelRef, metric
from methods.base import require


def barrier(curve: list[float]) -> float:
    """max over the curve of its excess above the straight line between its end points."""
    k = len(curve) - 1
    return max(v - ((1 - i / k) * curve[0] + (i / k) * curve[-1]) for i, v in enumerate(curve))


class LMCBarrier(Collector):
    name = "lmc"
    version = "1"

    def __init__(self, points: int = 11, task_batch: int = 32):
        require(points >= 3, f"metrics.lmc.points must be at least 3 (got {points}).")
        require(task_batch >= 1, f"metrics.lmc.task_batch must be at least 1 (got {task_batch}).")
        self.points, self.task_batch = points, task_batch

    def _task_loss_fn(self, ctx: EvalContext):
        holdout = ctx.world.encoded("holdout")
        latents, emb = holdout.batch(range(min(self.task_batch, len(holdout))))
        sched = training_scheduler(ctx.world.pipe)
        noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, generator(ctx.seed, "lmc-task"))
        return lambda unet: denoising_loss(unet, sched, latents, noise, t, emb)

    def _curves(self, ctx: EvalContext, a: ModelRef, b: ModelRef) -> dict:
        key = {"a": a.address, "b": b.address, "key": ctx.key_address, "settings": self.settings(), "seed": ctx.seed,
               "data": ctx.data_key}

        def compute() -> dict:
            state_a = {k: v.float() for k, v in ctx.unet(a).state_dict().items()}
            state_b = {k: v.float() for k, v in ctx.unet(b).state_dict().items()}
            unet = ctx.world.fresh_unet().requires_grad_(False).eval()
            task = self._task_loss_fn(ctx)
            curves = {"lambda": [], "task": [], "watermark": []}
            with torch.no_grad():
                for i in range(self.points):
                    lam = i / (self.points - 1)
                    unet.load_state_dict({k: (1 - lam) * state_a[k] + lam * state_b[k] for k in state_a})
                    curves["lambda"].append(lam)
                    curves["task"].append(float(task(unet)))
                    wm = ctx.method.watermark_loss(ctx.world, unet, ctx.key, ctx.seed)
                    if wm is not None:
                        curves["watermark"].append(float(wm))
            return curves

        return ctx.cache.get_or_compute_json("lmc", self.version, key, compute)[0]

    def compute(self, ctx: EvalContext) -> dict:
        out, curves = {}, {}
        for pair, (a, b) in {"wm_to_attacked": (ctx.watermarked, ctx.attacked[-1]),
                             "base_to_wm": (ctx.base, ctx.watermarked)}.items():
            c = self._curves(ctx, a, b)
            curves[f"lmc/{pair}"] = c
            for loss in ("task", "watermark"):
                if c[loss]:
                    out[f"lmc/{pair}/{loss}_barrier"] = metric(barrier(c[loss]), None)
        return {"metrics": out, "curves": curves}
