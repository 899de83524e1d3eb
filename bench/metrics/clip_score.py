"""CLIP score (torchmetrics `CLIPScore`) of generated images against their prompts.

The CLIP model is the world's own (`clip/` in the world folder, or a local/hub CLIP for real
models), handed to torchmetrics as a callable returning (model, processor): torchmetrics >= 1.7
accepts only its list of hub names or such a callable.
"""
from __future__ import annotations

import torch
from torchmetrics.multimodal.clip_score import CLIPScore as TMCLIPScore
from transformers import CLIPModel, CLIPProcessor

from bench.metrics.base import Collector, EvalContext, ModelRef, metric
from bench.errors import require


class _TensorFeatures(torch.nn.Module):
    """Adapter: transformers >= 5 returns output objects from get_*_features, torchmetrics 1.9 expects
    the projected embeddings as tensors (the objects' `pooler_output`)."""

    def __init__(self, model: CLIPModel):
        super().__init__()
        self.model, self.config = model, model.config

    @staticmethod
    def _tensor(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, *args, **kwargs):
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs):
        return self._tensor(self.model.get_text_features(*args, **kwargs))


class CLIPScore(Collector):
    name = "clip_score"
    headline = (("clip_score/watermarked", "CLIP marked"),)
    version = "1"

    def __init__(self, n_images: int = 1000, batch_size: int = 64):
        require(n_images >= 1, f"metrics.clip_score.n_images must be at least 1 (got {n_images}).")
        self.n_images, self.batch_size = n_images, batch_size

    def _score(self, ctx: EvalContext, ref: ModelRef) -> float:
        key = {"model": ref.address, "clip": ctx.world.clip_path, "settings": self.settings(), "seed": ctx.seed,
               "data": ctx.data_key}

        def compute() -> dict:
            model = CLIPModel.from_pretrained(ctx.world.clip_path).eval()
            processor = CLIPProcessor.from_pretrained(ctx.world.clip_path)
            scorer = TMCLIPScore(model_name_or_path=lambda: (_TensorFeatures(model), processor))
            images, prompts = ctx.samples(ref, self.n_images), ctx.world.data.prompts(self.n_images)
            for start in range(0, len(prompts), self.batch_size):
                sl = slice(start, start + self.batch_size)
                scorer.update(list(images[sl]), prompts[sl])
            return {"clip_score": float(scorer.compute())}

        return ctx.cache.get_or_compute_json("clip-score", self.version, key, compute)[0]["clip_score"]

    def compute(self, ctx: EvalContext) -> dict:
        if ctx.world.clip_path is None:
            return {"metrics": {}, "curves": {}}
        roles = {"base": ctx.base, "watermarked": ctx.watermarked, "attacked": ctx.attacked[-1]}
        with torch.no_grad():
            return {"metrics": {f"clip_score/{role}": metric(self._score(ctx, ref), True) for role, ref in roles.items()},
                    "curves": {}}
