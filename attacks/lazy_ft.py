"""Lazy-layer fine-tuning: the attack that reads AIAO's paper.

Threat model (adaptive, against AIAO). The attacker knows the method and its public settings (the
`MethodCard`): AIAO plants its sub-paths in the "lazy" units, the ones that move least under
fine-tuning, and ranks them with a probe fine-tune whose settings (`probe_steps`, `probe_lr`,
`probe_batch_size`, `lazy_fraction`) are public. It runs that probe itself, on a copy of the
suspect model and on its own data (`data.attacker`), so its ranking is not the owner's (the
owner probed the base model on the owner's data), then concentrates its fine-tuning on the units
it found lazy: `mode: finetune` trains only those units (at the attack's `lr`, which may be far
above what an ordinary fine-tune uses, since these units barely move otherwise); `mode: reinit`
first re-initialises them (a fresh UNet's weights, seeded) and then trains them back on its data.
It never sees the key (the sub-paths, masks, patterns or targets). Against other methods the
probe settings default to AIAO's YAML values (`probe_*: null`).
"""
from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from attacks.full_ft import FullFineTune
from bench.diffusion import derive_seed, generator
from bench.errors import require
from methods.aiao import probe_ranking
from bench.features import unet_units

AIAO_PUBLIC = {"probe_steps": 100, "probe_lr": 1e-4, "probe_batch_size": 16, "lazy_fraction": 0.5}  # tiny YAML


class LazyFineTune(FullFineTune):
    """Probe (on the attacker's data) -> the lazy units -> fine-tune (or re-initialise and train) only them."""

    name = "lazy_ft"
    version = "1"
    trains_text_encoder = False
    uses_card = True

    def __init__(self, mode: str = "finetune", probe_steps: int | None = None, probe_lr: float | None = None,
                 probe_batch_size: int | None = None, lazy_fraction: float | None = None, **train):
        require(mode in ("finetune", "reinit"), f"attack.mode must be 'finetune' or 'reinit' (got {mode!r}).")
        require(probe_steps is None or probe_steps >= 1, f"attack.probe_steps must be at least 1 or null (got {probe_steps}).")
        require(probe_lr is None or probe_lr > 0, f"attack.probe_lr must be positive or null (got {probe_lr}).")
        require(probe_batch_size is None or probe_batch_size >= 1,
                f"attack.probe_batch_size must be at least 1 or null (got {probe_batch_size}).")
        require(lazy_fraction is None or 0 < lazy_fraction <= 1,
                f"attack.lazy_fraction must be in (0, 1] or null (got {lazy_fraction}).")
        super().__init__(**train)
        self.mode = mode
        self.probe = {"probe_steps": probe_steps, "probe_lr": probe_lr, "probe_batch_size": probe_batch_size,
                      "lazy_fraction": lazy_fraction}
        self._lazy: list[str] = []

    def settings_from(self, card) -> dict:
        """The probe's settings: this attack's where set, else the method's public ones, else AIAO's tiny YAML."""
        public = card.follows("lazy_units") if card is not None else {}
        return {k: v if v is not None else public.get(k, AIAO_PUBLIC[k]) for k, v in self.probe.items()}

    def lazy_units(self, world, unet, card) -> list[str]:
        """The units the attacker's own probe finds least-moving on its own data."""
        s = self.settings_from(card)
        probe = world.fresh_unet({k: v.detach().clone() for k, v in unet.state_dict().items()})
        ranking = probe_ranking(world, probe, world.encoded("attacker"), s["probe_steps"], s["probe_lr"],
                                s["probe_batch_size"], generator(self.seed, self.name, "probe"))
        n_lazy = max(1, round(s["lazy_fraction"] * len(ranking)))
        return [name for name, _ in ranking[:n_lazy]]

    def trainable(self, unet):
        modules = dict(unet_units(unet))
        return [p for name in self._lazy for p in modules[name].parameters()]

    def run(self, world, unet, on_checkpoint, card=None):
        self._lazy = self.lazy_units(world, unet, card)
        if self.mode == "reinit":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.seed, self.name, "reinit"))
                fresh = dict(unet_units(UNet2DConditionModel.from_config(unet.config)))
            modules = dict(unet_units(unet))
            with torch.no_grad():
                for name in self._lazy:
                    modules[name].load_state_dict(fresh[name].state_dict())
        return super().run(world, unet, on_checkpoint, card)
