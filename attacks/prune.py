"""Global magnitude pruning: the smallest-magnitude conv/linear weights of the whole UNet set to zero.

Threat model: the attacker holds the marked model's weights and nothing else: no data, no training,
nothing of the method or the key.
"""
from __future__ import annotations

import torch

from attacks.base import WeightEdit
from bench.errors import require


class MagnitudePrune(WeightEdit):
    """One checkpoint per sparsity: the fraction of all conv/linear weights zeroed (one global threshold)."""

    name = "prune"
    version = "1"
    budget_label = "sparsity"
    unattacked = 0.0

    def __init__(self, sparsities=(0.1, 0.3, 0.4, 0.5, 0.7, 0.9)):
        bad = [s for s in sparsities if not 0 <= s < 1]
        require(not bad, f"attack.sparsities must lie in [0, 1) (got {bad} in {list(sparsities)}); a sparsity is "
                         "the fraction of weights zeroed, e.g. [0.1, 0.3, 0.4, 0.5, 0.7, 0.9] "
                         "(conf/attack/prune.yaml).")
        super().__init__([float(s) for s in sparsities], "sparsities")

    def edit(self, world, unet, value) -> None:
        weights = [m.weight for m in unet.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
        magnitudes = torch.cat([w.detach().abs().flatten().float().cpu() for w in weights])
        k = int(value * magnitudes.numel())
        if k == 0:
            return
        threshold = magnitudes.kthvalue(k).values
        for w in weights:
            w.masked_fill_(w.abs() <= threshold.to(w.device, w.dtype), 0.0)
