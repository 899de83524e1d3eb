"""What a metric collector sees (EvalContext) and returns (metrics with higher_is_better, curves).

The contract (`Collector`): `compute` (abstract), `finalise` (a default that derives nothing), `settings`, and
the class attributes `name`, `version` and `headline` (the leaderboard columns it fills). A collector is one
file here and one `conf/metrics/<name>.yaml`; the harness calls every collector the same way.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file, save_file

from bench.cache import Cache
from bench.diffusion import generate


@dataclass(frozen=True)
class ModelRef:
    """One model under evaluation: a content address and its UNet weights (None = the base UNet).

    Attack checkpoints also carry their checkpoint id (`step`) and the budget the attack spent to
    reach it (`budget`, in units of `budget_label`: steps, sparsity, noise scale...).
    """

    address: str
    weights: Path | None = None
    step: int | None = None
    budget: float | str | None = None
    budget_label: str = "step"


@dataclass
class EvalContext:
    """Everything collectors need: the world, the method and key, the models, and the cache."""

    world: object
    method: object
    key: object
    key_address: str
    cache: Cache
    seed: int
    data_key: dict
    base: ModelRef
    watermarked: ModelRef
    attacked: list[ModelRef]          # the attack's checkpoints on the watermarked model, by step
    null_attacked: list[ModelRef]     # the same attack's checkpoints on the base model
    collectors: dict = field(default_factory=dict)  # the run's collectors by name (set by the evaluate stage)
    _models: dict = field(default_factory=dict)

    def weights(self, ref: ModelRef) -> tuple:
        """(UNet, text-encoder state or None) for `ref`; the last one loaded is kept while this context lives."""
        if ref.weights is None:
            return self.world.unet, None
        if ref.address not in self._models:
            self._models.clear()  # keep at most one extra model in memory
            self._models[ref.address] = self.world.load_model(ref.weights)
        return self._models[ref.address]

    @contextmanager
    def model(self, ref: ModelRef):
        """`ref`'s UNet, with the world's text encoder set to `ref`'s own (if an attack fine-tuned one)
        for the duration of the block."""
        unet, text_state = self.weights(ref)
        with self.world.text_encoder_as(text_state):
            yield unet

    def samples(self, ref: ModelRef, n: int) -> torch.Tensor:
        """`n` images (uint8, N x 3 x H x W) generated from the held-out prompts; cached per model."""
        s = self.world.sampling
        key = {"model": ref.address, "n": n, "seed": self.seed, "sampling": vars(s), "data": self.data_key}

        def build(tmp: Path) -> None:
            with self.model(ref) as unet:
                pipe = self.world.pipeline_with(unet=unet)
                images = generate(pipe, self.world.data.prompts(n), self.seed, s.steps, s.guidance_scale, s.resolution,
                                  self.world.gen_batch)
            save_file({"images": (images * 255).round().to(torch.uint8)}, str(tmp / "samples.safetensors"))

        art = self.cache.get_or_build("samples", "1", key, build)
        return load_file(str(art.path / "samples.safetensors"))["images"]


def metric(value, higher_is_better: bool | None) -> dict:
    """One record entry. higher_is_better=None marks a descriptive number with no better direction."""
    return {"value": value, "higher_is_better": higher_is_better}


class Collector(ABC):
    """Base class: `compute(ctx)` returns {"metrics": {name: metric(...)}, "curves": {name: [...]}}; then, once
    every collector has computed, `finalise(metrics, curves, ctx)` may derive more metrics from all of them (and
    compute more through `ctx`, e.g. another collector's figure at one more model: `ctx.collectors`)."""

    name: ClassVar[str] = "base"
    version: ClassVar[str] = "1"
    # (metric name, column title) of the leaderboard's headline columns this collector fills, in order. The
    # leaderboard reads it from the source without importing the collector (bench.analysis.tables), so write it
    # as a literal tuple in the class body.
    headline: ClassVar[tuple[tuple[str, str], ...]] = ()

    @abstractmethod
    def compute(self, ctx: EvalContext) -> dict:
        """This collector's metrics and curves for the models in `ctx`."""

    def finalise(self, metrics: dict, curves: dict, ctx: EvalContext | None = None) -> dict:
        """Metrics derived from every collector's results (merged `metrics` and `curves`); none by default."""
        return {}

    def settings(self) -> dict:
        """The collector's parameters (part of every cache key it uses)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}
