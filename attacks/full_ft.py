"""Full fine-tuning: all UNet weights (and, optionally, the text encoder) trained on the attacker's data
with the ordinary denoising loss.

Threat model: the attacker holds the watermarked model's weights and its own data
(`data.attacker`: MNIST digits on the tiny world, a domain shift; `data.attacker=fashion_heldout`
for same-domain data the world never saw) and fine-tunes as a user adapting the model would. It
knows nothing of the method or the key; removal is a side effect.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from attacks.base import Attack
from bench.diffusion import denoising_loss, generator, sample_noise_and_t, text_states, training_scheduler
from bench.training import Amp, check_lr_schedule, optimise
from bench.errors import require


class FullFineTune(Attack):
    """AdamW on every UNet parameter, batches drawn from `world.data.attacker` with the attack seed.

    The training options (`steps`, `lr`, `batch_size`, `weight_decay`, `lr_scheduler`,
    `lr_warmup_steps`, `schedule`, `seed`) are shared by every training attack that subclasses this one.
    `train_text_encoder`: the text encoder is trained too (same optimiser and lr), its captions
    encoded afresh at every step; checkpoints then carry it (`text_encoder.*` tensors), and every
    metric evaluates the checkpoint with its own text encoder.
    """

    name = "full_ft"
    version = "1"
    trains_text_encoder: ClassVar[bool] = True  # False: this attack's loop has no text encoder to train

    def __init__(self, steps: int = 100, lr: float = 1e-4, batch_size: int = 8, seed: int = 0,
                 weight_decay: float = 0.0, schedule=None, lr_scheduler: str = "constant", lr_warmup_steps: int = 0,
                 train_text_encoder: bool = False):
        require(steps >= 1, f"attack.steps must be at least 1 (got {steps}); use attack=none for no attack.")
        require(lr > 0, f"attack.lr must be positive (got {lr}); typical: 1e-4 (tiny world), 1e-5 (Stable Diffusion).")
        require(batch_size >= 1, f"attack.batch_size must be at least 1 (got {batch_size}).")
        require(weight_decay >= 0, f"attack.weight_decay must be non-negative (got {weight_decay}).")
        require(isinstance(train_text_encoder, bool),
                f"attack.train_text_encoder must be true or false (got {train_text_encoder!r}).")
        require(not train_text_encoder or self.trains_text_encoder,
                f"attack.train_text_encoder=true is not supported by attack={self.name}: its loop trains the UNet only. "
                "Use attack=full_ft or attack=partial_ft to fine-tune the text encoder too.")
        check_lr_schedule(lr_scheduler, lr_warmup_steps, steps)
        super().__init__(steps, schedule)
        self.lr, self.batch_size, self.seed, self.weight_decay = lr, batch_size, seed, weight_decay
        self.lr_scheduler, self.lr_warmup_steps = lr_scheduler, lr_warmup_steps
        self.train_text_encoder = train_text_encoder

    def train(self, params, loss_fn, on_step=None, amp: Amp | None = None) -> list[float]:
        """The shared training loop with this attack's optimiser settings and the world's precision (`amp`)."""
        return optimise(params, loss_fn, self.steps, self.lr, desc=f"attack {self.name}",
                        weight_decay=self.weight_decay, on_step=on_step, lr_scheduler=self.lr_scheduler,
                        warmup_steps=self.lr_warmup_steps, amp=amp)

    def trainable(self, unet):
        """The parameters this attack trains (all of them); subclasses narrow it."""
        return list(unet.parameters())

    def run(self, world, unet, on_checkpoint, card=None):
        sched = training_scheduler(world.pipe)
        data = world.encoded("attacker")
        gen = generator(self.seed, self.name)
        unet.requires_grad_(False)
        params = self.trainable(unet)
        for p in params:
            p.requires_grad_(True)
        unet.train()
        text_encoder = world.fresh_text_encoder().train() if self.train_text_encoder else None
        if text_encoder is not None:
            params += list(text_encoder.parameters())

        def loss_fn(step: int) -> torch.Tensor:
            indices = torch.randint(0, len(data), (self.batch_size,), generator=gen)
            latents, emb = data.batch(indices)
            if text_encoder is not None:
                emb = text_states(world.pipe.tokenizer, text_encoder, data.captions(indices))
            noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, gen)
            return denoising_loss(unet, sched, latents, noise, t, emb)

        def checkpoint(step: int) -> None:
            if step in self.checkpoints:
                on_checkpoint(step, unet, **({"text_encoder": text_encoder} if text_encoder is not None else {}))

        checkpoint(0)
        self.train(params, loss_fn, on_step=checkpoint, amp=Amp.of(world))
        return unet.requires_grad_(False).eval()
