"""Gaussian weight noise: each weight tensor perturbed by noise whose norm is a fraction of its own.

Threat model: the attacker holds the marked model's weights and nothing else: no data, no training,
nothing of the method or the key. It is also the uninformed-degradation reference: utility lost
without aiming at the mark.
"""
from __future__ import annotations

import torch

from attacks.base import WeightEdit
from bench.diffusion import generator
from bench.errors import require


class WeightNoise(WeightEdit):
    """One checkpoint per relative scale s: W + s * ||W|| / sqrt(numel) * N(0, I), so ||noise|| ~ s ||W||."""

    name = "noise"
    version = "1"
    budget_label = "relative noise"
    unattacked = 0.0

    def __init__(self, scales=(0.001, 0.003, 0.01, 0.03, 0.1), seed: int = 0):
        bad = [s for s in scales if s < 0]
        require(not bad, f"attack.scales must be non-negative (got {bad}); a scale is the noise norm relative to "
                         "each tensor's norm, e.g. [0.001, 0.003, 0.01, 0.03, 0.1] (conf/attack/noise.yaml).")
        super().__init__([float(s) for s in scales], "scales")
        self.seed = seed

    def edit(self, world, unet, value) -> None:
        gen = generator(self.seed, self.name, value)
        for p in unet.parameters():
            noise = torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
            p.add_(noise * (value * p.norm() / p.numel() ** 0.5))
