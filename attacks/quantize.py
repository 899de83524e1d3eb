"""Quantisation round trip: weights stored in a lower precision and read back as fp32.

Threat model: the attacker holds the marked model's weights and nothing else: no data, no training,
nothing of the method or the key. It stores and shares the model in a common lower precision.
"""
from __future__ import annotations

import torch

from attacks.base import WeightEdit
from bench.errors import require

FORMATS = ("int8", "fp16", "bf16")


def int8_round_trip(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8 quantisation of `w` (dim 0 = output channels), dequantised."""
    scale = w.abs().flatten(1).amax(dim=1).clamp_min(1e-12) / 127
    scale = scale.view(-1, *[1] * (w.ndim - 1))
    return (w / scale).round().clamp(-127, 127) * scale


class Quantize(WeightEdit):
    """One checkpoint per format. int8 quantises conv/linear weight matrices (biases and norms stay
    fp32, as in weight-only int8 deployment); fp16 and bf16 round every tensor."""

    name = "quantize"
    version = "1"
    budget_label = "format"
    unattacked = "fp32"

    def __init__(self, formats=FORMATS):
        bad = [f for f in formats if f not in FORMATS]
        require(not bad, f"attack.formats has unknown formats {bad}; choose from {list(FORMATS)}.")
        super().__init__(list(formats), "formats")

    def edit(self, world, unet, value) -> None:
        for p in unet.parameters():
            if value == "int8":
                if p.ndim >= 2:
                    p.copy_(int8_round_trip(p))
            else:
                p.copy_(p.to({"fp16": torch.float16, "bf16": torch.bfloat16}[value]))
