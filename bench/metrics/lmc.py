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
from bench.errors import require


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
        """The denoising loss on held-out data with fixed noise and timesteps; the captions are encoded at each
        call, by whatever text encoder the world carries then."""
        n = min(self.task_batch, len(ctx.world.data.holdout))
        latents, _ = ctx.world.encoded("holdout").batch(range(n))
        sched = training_scheduler(ctx.world.pipe)
        noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, generator(ctx.seed, "lmc-task"))
        return lambda unet: denoising_loss(unet, sched, latents, noise, t, ctx.world.encoded("holdout").batch(range(n))[1])

    @staticmethod
    def _states(ctx: EvalContext, ref: ModelRef) -> tuple[dict, dict | None]:
        unet, text_state = ctx.weights(ref)
        return {k: v.float() for k, v in unet.state_dict().items()}, text_state

    def _curves(self, ctx: EvalContext, a: ModelRef, b: ModelRef) -> dict:
        key = {"a": a.address, "b": b.address, "key": ctx.key_address, "settings": self.settings(), "seed": ctx.seed,
               "data": ctx.data_key}

        def compute() -> dict:
            (state_a, text_a), (state_b, text_b) = self._states(ctx, a), self._states(ctx, b)
            if text_a is not None or text_b is not None:  # a fine-tuned text encoder moves along the line too
                base_text = {k: v.clone() for k, v in ctx.world.pipe.text_encoder.state_dict().items()}
                text_a, text_b = text_a or base_text, text_b or base_text
            unet = ctx.world.fresh_unet().requires_grad_(False).eval()
            task = self._task_loss_fn(ctx)
            curves = {"lambda": [], "task": [], "watermark": []}
            with torch.no_grad():
                for i in range(self.points):
                    lam = i / (self.points - 1)
                    unet.load_state_dict({k: (1 - lam) * state_a[k] + lam * state_b[k] for k in state_a})
                    text = None if text_a is None else {k: (1 - lam) * text_a[k].float() + lam * text_b[k].float()
                                                        for k in text_a}
                    with ctx.world.text_encoder_as(text):
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
