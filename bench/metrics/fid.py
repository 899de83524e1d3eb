"""FID of generated images against held-out real images, with the real FID Inception weights.

Generated images come from the held-out captions (shared with the CLIP score); the reference
statistics of the real images (`n_ref` of them, default `n_images`) are computed once per dataset
and cached, so a larger reference costs once and lowers the estimator's bias for every model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.data.base import batch_of
from bench.metrics import inception
from bench.metrics.base import Collector, EvalContext, ModelRef, metric
from bench.errors import require


class FID(Collector):
    name = "fid"
    headline = (("fid/watermarked", "FID marked"), ("fid/attacked", "FID attacked"))
    version = "3"      # 2: Inception input scaled to (x - 128) / 128; 3: exact low-rank Frechet distance
    ref_version = "2"  # the reference statistics (unchanged by 3)

    def __init__(self, n_images: int = 1000, n_ref: int | None = None):
        require(n_images >= 2, f"metrics.fid.n_images must be at least 2 (got {n_images}).")
        require(n_ref is None or n_ref >= 2, f"metrics.fid.n_ref must be at least 2 or null (got {n_ref}).")
        self.n_images, self.n_ref = n_images, n_ref

    def _reference(self, ctx: EvalContext) -> tuple[np.ndarray, np.ndarray]:
        holdout = ctx.world.data.holdout
        n = min(self.n_ref or self.n_images, len(holdout))  # real images: computed once per dataset, so may be more

        def build(tmp: Path) -> None:
            images, _ = batch_of(holdout, range(n))
            real = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            mu, sigma = inception.stats(inception.features(real, ctx.world.device))
            np.savez(tmp / "stats.npz", mu=mu, sigma=sigma)

        art = ctx.cache.get_or_build("fid-ref", self.ref_version, {"data": ctx.data_key, "n": n}, build)
        stats = np.load(art.path / "stats.npz")
        return stats["mu"], stats["sigma"]

    def fid(self, ctx: EvalContext, ref: ModelRef) -> float:
        """FID of `ref`'s images (cached per model, settings, seed and data)."""
        key = {"model": ref.address, "settings": self.settings(), "seed": ctx.seed, "data": ctx.data_key}

        def compute() -> dict:
            generated = inception.features(ctx.samples(ref, self.n_images), ctx.world.device)
            return {"fid": inception.fid(generated, self._reference(ctx))}

        return ctx.cache.get_or_compute_json("fid", self.version, key, compute)[0]["fid"]

    def compute(self, ctx: EvalContext) -> dict:
        roles = {"base": ctx.base, "watermarked": ctx.watermarked, "attacked": ctx.attacked[-1]}
        return {"metrics": {f"fid/{role}": metric(self.fid(ctx, ref), False) for role, ref in roles.items()},
                "curves": {}}
