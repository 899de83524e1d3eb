"""DreamBooth: few-shot subject fine-tuning with a rare-token prompt and prior preservation (Ruiz et al. 2023).

The subject is one caption of the attacker's data (its first item's, unless `subject` names
another); its first `n_images` images are trained with the prompt "a <token> <class>", where the
class is the caption's last word. Prior preservation trains, in the same step, on `n_class_images`
images the input model itself generates for "a <class>": loss = instance + prior_weight * prior.

Threat model: the attacker holds the marked model's weights and a few images of its own subject
(from `data.attacker`), plus the class images the model itself generates. It knows nothing of the
method or the key; it personalises the model as a DreamBooth user would, and removal is a side effect.
"""
from __future__ import annotations

import copy

import torch

from attacks.full_ft import FullFineTune
from bench.diffusion import (denoising_loss, derive_seed, encode_images, encode_prompts, generate, generator,
                             sample_noise_and_t, training_scheduler)
from bench.errors import ConfigError, require
from bench.training import Amp


class DreamBooth(FullFineTune):
    """AdamW on every UNet parameter: instance loss on the subject's images plus weighted prior loss."""

    name = "dreambooth"
    version = "1"
    trains_text_encoder = False

    def __init__(self, subject: str | None = None, n_images: int = 4, token: str = "sks", n_class_images: int = 16,
                 prior_weight: float = 1.0, **train):
        require(n_images >= 1, f"attack.n_images must be at least 1 (got {n_images}); DreamBooth uses 3-5.")
        require(n_class_images >= 1, f"attack.n_class_images must be at least 1 (got {n_class_images}).")
        require(prior_weight >= 0, f"attack.prior_weight must be non-negative (got {prior_weight}); the paper uses 1.")
        require(bool(token.strip()), "attack.token must be a non-empty rare word (DreamBooth uses 'sks').")
        super().__init__(**{"lr": 5e-6, "batch_size": 1, **train})
        self.subject, self.n_images, self.token = subject, n_images, token
        self.n_class_images, self.prior_weight = n_class_images, prior_weight

    def instance_images(self, dataset) -> tuple[torch.Tensor, str]:
        """The first `n_images` images captioned with the subject caption, and that caption."""
        subject = self.subject or dataset[0][1]
        images = []
        for i in range(len(dataset)):
            image, caption = dataset[i]
            if caption == subject:
                images.append(image)
                if len(images) == self.n_images:
                    return torch.stack(images), subject
        raise ConfigError(f"attack.subject '{subject}' captions {len(images)} attacker images, fewer than "
                          f"attack.n_images={self.n_images}; pick a caption with more images or lower n_images.")

    def run(self, world, unet, on_checkpoint, card=None):
        images, subject = self.instance_images(world.data.attacker)
        noun = subject.split()[-1]
        pipe = world.pipeline_with(unet=copy.deepcopy(unet).to(world.unet.dtype).eval())
        s = world.sampling
        class_images = generate(pipe, [f"a {noun}"] * self.n_class_images, derive_seed(self.seed, self.name, "prior"),
                                s.steps, s.guidance_scale, s.resolution, world.gen_batch)
        del pipe
        instance = encode_images(world.pipe, images).float()
        prior = encode_images(world.pipe, class_images * 2 - 1).float()
        instance_emb, prior_emb = encode_prompts(world.pipe, [f"a {self.token} {noun}", f"a {noun}"])
        sched = training_scheduler(world.pipe)
        gen = generator(self.seed, self.name)

        def part(latents: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
            batch = latents[torch.randint(0, len(latents), (self.batch_size,), generator=gen)]
            noise, t = sample_noise_and_t(batch, sched.config.num_train_timesteps, gen)
            return denoising_loss(unet, sched, batch, noise, t, emb.expand(self.batch_size, -1, -1))

        def loss_fn(step: int) -> torch.Tensor:
            return part(instance, instance_emb) + self.prior_weight * part(prior, prior_emb)

        def checkpoint(step: int) -> None:
            if step in self.checkpoints:
                on_checkpoint(step, unet)

        unet.requires_grad_(True).train()
        checkpoint(0)
        self.train(unet.parameters(), loss_fn, on_step=checkpoint, amp=Amp.of(world))
        return unet.requires_grad_(False).eval()
