"""LoRA fine-tuning: low-rank adapters (peft) on the UNet's attention layers, trained on the attacker's data.

Checkpoints are the merged model (W + alpha/rank * B A) in the plain UNet layout, so every
collector reads them like any other attacked UNet.

Threat model: the attacker holds the marked model's weights and its own data (`data.attacker`, as
full_ft) and adapts the model with LoRA as a user would. It knows nothing of the method or the key;
removal is a side effect.
"""
from __future__ import annotations

import copy
import re
from functools import cache

import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

from attacks.full_ft import FullFineTune
from bench.errors import require

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@cache
def attention_module_suffixes() -> frozenset[str]:
    """Every name suffix of a Linear/Conv2d inside a diffusers UNet2DConditionModel attention block.

    Derived from a tiny UNet built in code (all SD UNets share its attention-block layout); these
    are the names `target_modules` may use (e.g. to_q, attn2.to_k, to_out.0, proj_in, ff.net.2).
    """
    tiny = UNet2DConditionModel(block_out_channels=(32, 32), layers_per_block=1, cross_attention_dim=8,
                                attention_head_dim=8, sample_size=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    suffixes = set()
    for name, module in tiny.named_modules():
        if ".attentions." in name and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            parts = name.split(".attentions.", 1)[1].split(".")[1:]  # the path inside one attention block
            suffixes.update(".".join(parts[i:]) for i in range(len(parts)) if not parts[i].isdigit())
    return frozenset(suffixes)


class LoRAFineTune(FullFineTune):
    """AdamW on LoRA adapters of the attention layers; the base weights stay frozen."""

    name = "lora_ft"
    version = "1"
    trains_text_encoder = False

    def __init__(self, rank: int = 4, alpha: float | None = None, target_modules=DEFAULT_TARGETS,
                 rank_fraction: float | None = None, **train):
        require(rank >= 1, f"attack.rank must be at least 1 (got {rank}); SleeperMark attacks with rank 20.")
        require(rank_fraction is None or 0 < rank_fraction <= 1,
                f"attack.rank_fraction must be in (0, 1] or null (got {rank_fraction}); it scales each layer's rank "
                "to its width: rank = max(1, round(rank_fraction * min(in, out))).")
        require(alpha is None or alpha > 0, f"attack.alpha must be positive or null (got {alpha}); null = rank "
                "(the update is scaled by 1).")
        targets = list(target_modules)
        unknown = [t for t in targets if t not in attention_module_suffixes()]
        require(targets and not unknown,
                f"attack.target_modules has names that are not layers of a diffusers UNet attention block: "
                f"{unknown or targets}. Use module-name suffixes such as {list(DEFAULT_TARGETS)} (the default), "
                f"or any of: {sorted(attention_module_suffixes())}.")
        super().__init__(**train)
        self.rank, self.alpha, self.target_modules, self.rank_fraction = rank, alpha, targets, rank_fraction

    def ranks(self, unet) -> dict[str, int]:
        """Each adapted layer's rank: `rank`, or scaled to the layer's width with `rank_fraction`
        (SleeperMark's rank 20 is 6% of SD 1.5's narrowest attention width, 320, and 1.6% of its widest)."""
        out = {}
        for name, module in unet.named_modules():
            if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in self.target_modules):
                width = min(module.in_features, module.out_features)
                out[name] = self.rank if self.rank_fraction is None else max(1, round(self.rank_fraction * width))
        return out

    def run(self, world, unet, on_checkpoint, card=None):
        plain = copy.deepcopy(unet).requires_grad_(False)  # receives the merged weights at each checkpoint
        base_state = unet.state_dict()  # the frozen input weights (LoRA wraps, never changes, them)
        ranks = self.ranks(unet)
        patterns = {f"^{re.escape(name)}$": r for name, r in ranks.items()}
        alphas = {k: float(r if self.alpha is None else self.alpha) for k, r in patterns.items()}
        config = LoraConfig(r=self.rank, lora_alpha=float(self.rank if self.alpha is None else self.alpha),
                            target_modules=self.target_modules, rank_pattern=patterns, alpha_pattern=alphas)
        lora_unet = inject_adapter_in_model(config, unet)

        def merged(step: int, _model) -> None:
            state = dict(base_state)
            for name, module in lora_unet.named_modules():
                if isinstance(module, LoraLayer):
                    key = f"{name}.weight"
                    state[key] = base_state[key] + module.get_delta_weight("default").detach().to(base_state[key].dtype)
            plain.load_state_dict(state)
            on_checkpoint(step, plain)

        super().run(world, lora_unet, merged)
        return plain.eval()

    def trainable(self, unet):
        """Only the LoRA adapter matrices."""
        return [p for name, p in unet.named_parameters() if "lora_" in name]
