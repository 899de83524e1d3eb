"""Partial fine-tuning: only chosen UNet blocks (e.g. the decoder, `up_blocks`) trained on the attacker's data.

Threat model: as full_ft (the marked model's weights and the attacker's own data, nothing of the
method or the key), with only the chosen blocks trained.
"""
from __future__ import annotations

from attacks.full_ft import FullFineTune
from bench.errors import require


class PartialFineTune(FullFineTune):
    """Full fine-tuning restricted to the parameters under the `blocks` name prefixes."""

    name = "partial_ft"
    version = "1"

    def __init__(self, blocks=("up_blocks",), **train):
        self.blocks = list(blocks)
        require(len(self.blocks) >= 1 and all(isinstance(b, str) and b for b in self.blocks),
                f"attack.blocks must be a non-empty list of UNet block names (got {self.blocks}); "
                "e.g. [up_blocks], [down_blocks.1, mid_block].")
        super().__init__(**train)

    def trainable(self, unet):
        """The parameters under any of `self.blocks`; refuses a prefix that names no parameter."""
        named = dict(unet.named_parameters())
        chosen = {}
        for prefix in self.blocks:
            matched = {n: p for n, p in named.items() if n == prefix or n.startswith(prefix + ".")}
            require(bool(matched), f"attack.blocks has '{prefix}', which names no UNet parameter. Use name prefixes "
                                   f"of the UNet's modules; its top-level blocks are "
                                   f"{list(dict.fromkeys(n.split('.')[0] for n in named))} "
                                   "(go deeper with e.g. down_blocks.1 or up_blocks.0.attentions).")
            chosen.update(matched)
        return list(chosen.values())
