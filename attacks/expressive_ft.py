"""Expressive-block fine-tuning: the attack that reads ActiveMark's paper.

Threat model (adaptive, against ActiveMark). The attacker knows the method and its public settings
(the `MethodCard`): ActiveMark injects its message at the output of the "expressive" transformer
block, found by massive activations (the first block whose mean top-5 absolute activation at least
`jump_factor` x its predecessor's; public), and reads it after the blocks that follow, which the
owner fine-tuned. The attacker runs the same rule itself on its own data (`data.attacker`: noisy
latents of its images with their captions, noise and timesteps from its seed), not on the owner's
hold-out inputs, which are part of the key, and fine-tunes every transformer block after the one
it found (attention, feed-forward and their norms) on its data with the ordinary denoising loss.
If the card fixes the block (`block: <index>`), it uses that. It never sees the key (the hold-out
inputs, messages, the token, the encoder or the decoder).
"""
from __future__ import annotations

import torch

from attacks.full_ft import FullFineTune
from bench.diffusion import generator, sample_noise_and_t, training_scheduler
from bench.errors import require
from methods.activemark import activation_profile, expressive_block
from bench.features import transformer_blocks


class ExpressiveFineTune(FullFineTune):
    """Massive-activation rule on the attacker's inputs -> fine-tune the transformer blocks after that block."""

    name = "expressive_ft"
    version = "1"
    trains_text_encoder = False
    uses_card = True

    def __init__(self, n_probe: int = 64, jump_factor: float | None = None, **train):
        require(n_probe >= 1, f"attack.n_probe must be at least 1 (got {n_probe}).")
        require(jump_factor is None or jump_factor > 1, f"attack.jump_factor must be above 1 or null (got {jump_factor}).")
        super().__init__(**train)
        self.n_probe, self.jump_factor = n_probe, jump_factor
        self._after = 0

    def find_block(self, world, unet, card) -> int:
        """The expressive block by ActiveMark's public rule, measured on the attacker's own inputs."""
        public = card.follows("expressive_block") if card is not None else {}
        if public.get("block") is not None:
            return int(public["block"])
        data, sched = world.encoded("attacker"), training_scheduler(world.pipe)
        gen = generator(self.seed, self.name, "probe")
        latents, emb = data.batch(torch.randint(0, len(data), (self.n_probe,), generator=gen))
        noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, gen)
        top5, _, _ = activation_profile(unet, sched.add_noise(latents, noise, t), t, emb)
        factor = self.jump_factor or public.get("jump_factor", 2.0)
        return expressive_block(top5, factor, len(top5) - 2)

    def trainable(self, unet):
        return [p for _, block in transformer_blocks(unet)[self._after + 1:] for p in block.parameters()]

    def run(self, world, unet, on_checkpoint, card=None):
        self._after = self.find_block(world, unet, card)
        return super().run(world, unet, on_checkpoint, card)
