"""Model merging: the attacked model's weights interpolated with another model's.

Threat model: the attacker holds the marked model's weights and the public, unmarked base model the
mark was embedded into (realistic for any mark on a public base); for `partner: finetuned` also its
own data (`data.attacker`), on which it fine-tunes the base. It knows nothing of the method or the key.
"""
from __future__ import annotations

from attacks.base import WeightEdit
from attacks.full_ft import FullFineTune
from bench.diffusion import unet_state
from bench.errors import require

PARTNERS = ("base", "finetuned")


class Merge(WeightEdit):
    """One checkpoint per coefficient c: (1 - c) * input + c * partner.

    partner "base" is the world's unmarked UNet; "finetuned" is the base UNet fine-tuned on the
    attacker's data with the full_ft loop (`ft_*` settings, seed-controlled), a model that never
    saw the watermark.
    """

    name = "merge"
    version = "1"
    budget_label = "merge coefficient"
    unattacked = 0.0

    def __init__(self, coefficients=(0.1, 0.3, 0.5, 0.7, 0.9), partner: str = "base", ft_steps: int = 100,
                 ft_lr: float = 1e-4, ft_batch_size: int = 8, seed: int = 0):
        bad = [c for c in coefficients if not 0 <= c <= 1]
        require(not bad, f"attack.coefficients must lie in [0, 1] (got {bad}); a coefficient is the partner "
                         "model's weight in the interpolation, e.g. [0.1, 0.3, 0.5, 0.7, 0.9].")
        require(partner in PARTNERS, f"attack.partner must be one of {list(PARTNERS)} (got {partner!r}).")
        require(ft_steps >= 1, f"attack.ft_steps must be at least 1 (got {ft_steps}).")
        require(ft_lr > 0, f"attack.ft_lr must be positive (got {ft_lr}); typical: 1e-4 (tiny world), 1e-5 (SD).")
        require(ft_batch_size >= 1, f"attack.ft_batch_size must be at least 1 (got {ft_batch_size}).")
        super().__init__([float(c) for c in coefficients], "coefficients")
        self.partner = partner
        self.finetune = FullFineTune(steps=ft_steps, lr=ft_lr, batch_size=ft_batch_size, seed=seed, schedule=(0,))
        self._partner_state: dict = {}  # the partner's weights, set by `run` for `edit`

    def run(self, world, unet, on_checkpoint, card=None):
        other = world.fresh_unet()
        if self.partner == "finetuned":
            other = self.finetune.run(world, other, lambda step, model: None)
        self._partner_state = unet_state(other)
        del other
        return super().run(world, unet, on_checkpoint)

    def edit(self, world, unet, value) -> None:
        for name, p in unet.named_parameters():
            p.lerp_(self._partner_state[name].to(p.device, p.dtype), value)
