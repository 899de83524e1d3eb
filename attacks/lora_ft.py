"""LoRA fine-tuning: low-rank adapters (peft) on the UNet's attention layers, trained on the attacker's data.

Checkpoints are the merged model (W + alpha/rank * B A) in the plain UNet layout, so every
collector reads them like any other attacked UNet.
"""
from __future__ import annotations

import copy
from functools import cache

import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

from attacks.full_ft import FullFineTune
from methods.base import require

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

    def __init__(self, rank: int = 4, alpha: float | None = None, target_modules=DEFAULT_TARGETS, steps: int = 100,
                 lr: float = 1e-4, batch_size: int = 8, seed: int = 0, weight_decay: float = 0.0, schedule=None):
        require(rank >= 1, f"attack.rank must be at least 1 (got {rank}); SleeperMark attacks with rank 20.")
        alpha = float(rank if alpha is None else alpha)
        require(alpha > 0, f"attack.alpha must be positive (got {alpha}); alpha = rank scales the update by 1.")
        targets = list(target_modules)
        unknown = [t for t in targets if t not in attention_module_suffixes()]
        require(targets and not unknown,
                f"attack.target_modules has names that are not layers of a diffusers UNet attention block: "
                f"{unknown or targets}. Use module-name suffixes such as {list(DEFAULT_TARGETS)} (the default), "
                f"or any of: {sorted(attention_module_suffixes())}.")
        super().__init__(steps, lr, batch_size, seed, weight_decay, schedule)
        self.rank, self.alpha, self.target_modules = rank, alpha, targets

    def run(self, world, unet, on_checkpoint):
        plain = copy.deepcopy(unet).requires_grad_(False)  # receives the merged weights at each checkpoint
        base_state = unet.state_dict()  # the frozen input weights (LoRA wraps, never changes, them)
        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=self.target_modules)
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
