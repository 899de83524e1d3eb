"""Distillation: a freshly initialised UNet trained to reproduce the input (teacher) model's noise predictions.

Threat model: the attacker can query the marked model as a black box for its noise predictions (it
never reads or copies its weights: the student starts from a fresh initialisation), and uses its own
data (`data.attacker`: captions and images, noised with its own seed). It knows nothing of the method
or the key; removal is whatever the student does not learn of the teacher.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

from attacks.full_ft import FullFineTune
from bench.diffusion import derive_seed, eps_prediction, generator, sample_noise_and_t, training_scheduler
from bench.training import Amp


class Distill(FullFineTune):
    """AdamW on a re-initialised student (same config, init seeded) minimising MSE(student eps, teacher eps)
    on noised latents and captions of the attacker's clean data. Checkpoint 0 is the teacher itself."""

    name = "distill"
    version = "1"
    trains_text_encoder = False

    def run(self, world, unet, on_checkpoint, card=None):
        teacher = unet.requires_grad_(False).eval()
        on_checkpoint(0, teacher)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, self.name, "init"))
            student = UNet2DConditionModel.from_config(teacher.config)
        student.to(teacher.device).train()
        if world.training.gradient_checkpointing:
            student.enable_gradient_checkpointing()
        sched = training_scheduler(world.pipe)
        data = world.encoded("attacker")
        gen = generator(self.seed, self.name)

        def loss_fn(step: int) -> torch.Tensor:
            latents, emb = data.batch(torch.randint(0, len(data), (self.batch_size,), generator=gen))
            noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, gen)
            with torch.no_grad():
                target = eps_prediction(teacher, sched, latents, noise, t, emb)
            return F.mse_loss(eps_prediction(student, sched, latents, noise, t, emb).float(), target.float())

        def checkpoint(step: int) -> None:
            if step in self.checkpoints and step > 0:
                on_checkpoint(step, student)

        self.train(student.parameters(), loss_fn, on_step=checkpoint, amp=Amp.of(world))
        return student.requires_grad_(False).eval()
