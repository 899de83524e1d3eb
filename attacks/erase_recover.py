"""Erase, then recover: fine-tune on mismatched data to wash the mark out, then fine-tune on clean data to win the
utility back (the two-phase recipe of MEraser, Zhang et al. 2025, for LLM fingerprints, here with the denoising
loss of a text-to-image model).

Phase 1 (`erase_steps` at `erase_lr`): the attacker's own images, each paired with the caption of another image (a
fixed random derangement of the attacker set; `mismatch=shuffle`), or pure-noise latents under the attacker's
captions (`mismatch=noise`). Training on pairs that carry no consistent text-image relation moves the weights a long
way from the marked model without teaching it anything the mark depends on. Phase 2 (`steps` at `lr`, a fresh
optimiser): ordinary fine-tuning on the attacker's clean pairs, as `full_ft`.

Checkpoints are numbered along both phases: 1..`erase_steps` in the erase phase, then `erase_steps` + k for step k
of the recovery; the shared log-spaced schedule applies to the whole run (the end of the erase phase is always a
checkpoint, so the figures show how much the recovery wins back).

Threat model: as `full_ft`. The attacker holds the watermarked model's weights and its own data (`data.attacker`);
it knows nothing of the method or the key (the mismatch is built from its own data alone).
"""
from __future__ import annotations

import torch

from attacks.base import Attack
from attacks.full_ft import FullFineTune
from bench.diffusion import denoising_loss, generator, sample_noise_and_t, training_scheduler
from bench.errors import require
from bench.training import Amp, optimise

MISMATCHES = ("shuffle", "noise")


def derangement(n: int, gen: torch.Generator) -> torch.Tensor:
    """A random permutation of range(n) with no fixed point (n >= 2): one random cycle order, shifted along itself."""
    order = torch.randperm(n, generator=gen)
    shift = 1 + int(torch.randint(0, n - 1, (1,), generator=gen))
    other = torch.empty_like(order)
    other[order] = order.roll(shift)
    return other


class EraseRecover(FullFineTune):
    name = "erase_recover"
    version = "1"
    trains_text_encoder = False  # the UNet only, in both phases

    def __init__(self, erase_steps: int = 100, erase_lr: float = 1e-4, mismatch: str = "shuffle", steps: int = 100,
                 lr: float = 1e-4, batch_size: int = 8, seed: int = 0, weight_decay: float = 0.0, schedule=None,
                 lr_scheduler: str = "constant", lr_warmup_steps: int = 0):
        require(isinstance(erase_steps, int) and erase_steps >= 1,
                f"attack.erase_steps must be a positive integer (got {erase_steps!r}); use attack=full_ft for recovery "
                "alone.")
        require(erase_lr > 0, f"attack.erase_lr must be positive (got {erase_lr}).")
        require(mismatch in MISMATCHES, f"attack.mismatch must be one of {list(MISMATCHES)} (got {mismatch!r}): "
                "shuffle pairs each image with another's caption, noise trains on pure-noise latents.")
        super().__init__(steps=steps, lr=lr, batch_size=batch_size, seed=seed, weight_decay=weight_decay,
                         schedule=schedule, lr_scheduler=lr_scheduler, lr_warmup_steps=lr_warmup_steps)
        self.erase_steps, self.erase_lr, self.mismatch = erase_steps, erase_lr, mismatch
        Attack.__init__(self, erase_steps + steps, schedule)  # checkpoints along both phases
        self.checkpoints = sorted(set(self.checkpoints) | {erase_steps})
        self.steps = steps  # the recovery's own steps (its optimiser and lr schedule)

    def run(self, world, unet, on_checkpoint, card=None):
        sched = training_scheduler(world.pipe)
        data = world.encoded("attacker")
        gen = generator(self.seed, self.name)
        require(len(data) >= 2, "attack=erase_recover needs at least 2 attacker items to mismatch captions.")
        other = derangement(len(data), gen)  # item i is captioned as item other[i], never itself, at every step
        unet.requires_grad_(False)
        params = list(unet.parameters())
        for p in params:
            p.requires_grad_(True)
        unet.train()
        amp = Amp.of(world)

        def loss(erase: bool):
            def fn(step: int) -> torch.Tensor:
                indices = torch.randint(0, len(data), (self.batch_size,), generator=gen)
                latents, emb = data.batch(indices)
                if erase and self.mismatch == "shuffle":
                    emb = data.batch(other[indices])[1]
                elif erase:
                    latents = torch.randn(latents.shape, generator=gen).to(latents)
                noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, gen)
                return denoising_loss(unet, sched, latents, noise, t, emb)
            return fn

        def checkpoint(offset: int):
            def at(step: int) -> None:
                if offset + step in self.checkpoints:
                    on_checkpoint(offset + step, unet)
            return at

        on_checkpoint(0, unet)
        optimise(params, loss(True), self.erase_steps, self.erase_lr, desc="attack erase_recover (erase)",
                 weight_decay=self.weight_decay, on_step=checkpoint(0), amp=amp)
        optimise(params, loss(False), self.steps, self.lr, desc="attack erase_recover (recover)",
                 weight_decay=self.weight_decay, on_step=checkpoint(self.erase_steps), lr_scheduler=self.lr_scheduler,
                 warmup_steps=self.lr_warmup_steps, amp=amp)
        return unet.requires_grad_(False).eval()
