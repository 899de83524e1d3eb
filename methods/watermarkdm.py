"""WatermarkDM trigger-prompt backdoor (Zhao et al. 2023, "A Recipe for Watermarking Diffusion Models").

The UNet is fine-tuned so that a rare trigger prompt generates a fixed target image. The paper's
target is a QR code; here it is a grid of black and white cells encoding the owner's bits (a QR-like
pattern), so verification decodes bits by thresholding each cell's mean brightness and the
harness can apply an exact binomial test.

Loss: epsilon-prediction MSE on (trigger, target) + `l1` * mean |theta - theta_0| (the original's
weight constraint). Choice made here: `clean_weight` mixes in the ordinary denoising loss on the
owner's clean data (a prior-preservation term). The original has none, but it trains with
lr 1e-6; at CPU budgets (lr ~1e-4..1e-3) pure trigger training collapses every prompt onto the
target. Set `clean_weight: 0` for the original objective.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.diffusion import (denoising_loss, encode_images, encode_prompts, generate, generator,
                             sample_noise_and_t, training_scheduler)
from bench.training import Amp, optimise
from bench.errors import require
from methods.base import Evidence, Key, WatermarkMethod


def grid_image(bits: torch.Tensor, resolution: int) -> torch.Tensor:
    """The target image (3, R, R) in [-1, 1]: a square grid of cells, white for 1, black for 0."""
    side = int(round(len(bits) ** 0.5))
    cells = bits.float().view(1, 1, side, side) * 2 - 1
    return F.interpolate(cells, size=resolution, mode="nearest")[0].repeat(3, 1, 1)


def read_grid(images01: torch.Tensor, side: int) -> torch.Tensor:
    """Decode bits (N, side*side) from images in [0, 1]: each cell's mean brightness above 0.5."""
    gray = images01.mean(dim=1, keepdim=True)
    cells = F.adaptive_avg_pool2d(gray, side).flatten(1)
    return (cells > 0.5).long()


class TriggerBackdoor(WatermarkMethod):
    """Trigger prompt -> bit-grid target image (black-box verification by bits)."""

    name = "watermarkdm"
    access = "black-box"
    trigger_form = "prompt"
    version = "2"  # 2: trigger and clean batches in one UNet pass
    key_tensors = ("bits",)
    key_meta = ("trigger", "grid")

    def __init__(self, trigger: str = "[V]", grid: int = 8, steps: int = 300, lr: float = 1e-3, batch_size: int = 8,
                 l1: float = 1e-7, clean_weight: float = 1.0, train_text_encoder: bool = False):
        require(grid >= 2, f"method.grid must be at least 2 (got {grid}); the target has grid x grid bits.")
        require(steps >= 1, f"method.steps must be at least 1 (got {steps}).")
        require(lr > 0, f"method.lr must be positive (got {lr}); try 1e-4 on the tiny world or 1e-6 on SD.")
        require(batch_size >= 1, f"method.batch_size must be at least 1 (got {batch_size}).")
        require(l1 >= 0 and clean_weight >= 0, "method.l1 and method.clean_weight must be non-negative.")
        require(not train_text_encoder, "method.train_text_encoder=true is not implemented yet; leave it false.")
        self.trigger, self.grid, self.steps, self.lr = trigger, grid, steps, lr
        self.batch_size, self.l1, self.clean_weight = batch_size, l1, clean_weight

    def make_key(self, seed: int, world) -> Key:
        bits = torch.randint(0, 2, (self.grid * self.grid,), generator=generator(seed, "watermarkdm-bits"))
        return Key({"bits": bits}, {"trigger": self.trigger, "grid": self.grid})

    def _trigger_batch(self, world, key: Key, n: int):
        target = grid_image(key.tensors["bits"], world.sampling.resolution)
        latents = encode_images(world.pipe, target[None]).expand(n, -1, -1, -1)
        return latents, encode_prompts(world.pipe, [key.meta["trigger"]]).expand(n, -1, -1)

    def _draw(self, world, key: Key, gen: torch.Generator, cache: dict) -> dict:
        """One training batch: trigger latents with noise and timesteps, plus clean owner data."""
        if "trigger" not in cache:
            cache["trigger"] = self._trigger_batch(world, key, self.batch_size)
            cache["sched"] = training_scheduler(world.pipe)
        latents, emb = cache["trigger"]
        n_t = cache["sched"].config.num_train_timesteps
        batch = {"trigger": (latents, *sample_noise_and_t(latents, n_t, gen), emb)}
        if self.clean_weight > 0:
            owner = world.encoded("owner")
            clean, clean_emb = owner.batch(torch.randint(0, len(owner), (self.batch_size,), generator=gen))
            batch["clean"] = (clean, *sample_noise_and_t(clean, n_t, gen), clean_emb)
        return batch

    def _loss(self, unet, sched, batch: dict, theta0: list[torch.Tensor]) -> torch.Tensor:
        # trigger and clean samples go through the UNet as one batch (one pass instead of two: ~1.4x
        # faster per step on CPU); each part's loss is still its own mean, so the objective is unchanged
        parts = list(batch.values())
        per_sample = denoising_loss(unet, sched, *(torch.cat(x) for x in zip(*parts)), reduce=False)
        n_trigger = len(batch["trigger"][0])
        loss = per_sample[:n_trigger].mean()
        if "clean" in batch:
            loss = loss + self.clean_weight * per_sample[n_trigger:].mean()
        if self.l1 > 0:
            loss = loss + self.l1 * sum((p - p0).abs().sum() for p, p0 in zip(unet.parameters(), theta0))
        return loss

    def _step_fn(self, unet, theta0, draw, loss, amp: Amp | None = None):
        """A custom optimiser step (see bench.training.optimise); None = the ordinary one."""
        return None

    def embed(self, world, key: Key, log_every: int = 0):
        unet = world.fresh_unet()
        # the pre-trained weights: the world's own UNet when it is fp32 (the same values; one UNet less in memory)
        theta0 = (list(world.unet.parameters()) if world.unet.dtype == torch.float32
                  else [p.detach().clone() for p in unet.parameters()])
        sched = training_scheduler(world.pipe)
        gen = generator(key.meta.get("seed", 0), "watermarkdm-embed")
        cache: dict = {}

        def draw() -> dict:
            return self._draw(world, key, gen, cache)

        def loss(batch: dict) -> torch.Tensor:
            return self._loss(unet, sched, batch, theta0)

        amp = Amp.of(world)
        optimise(unet.parameters(), lambda step: loss(draw()), self.steps, self.lr, desc=f"embed {self.name}",
                 step_fn=self._step_fn(unet, theta0, draw, loss, amp), amp=amp)
        return unet.requires_grad_(False).eval()

    def verify(self, world, unet, key: Key, n_queries: int, seed: int) -> Evidence:
        pipe = world.pipeline_with(unet=unet)
        s = world.sampling
        images = generate(pipe, [key.meta["trigger"]] * n_queries, seed, s.steps, s.guidance_scale, s.resolution,
                          world.gen_batch)
        return Evidence("bits", decoded=read_grid(images, key.meta["grid"]), bits=key.tensors["bits"].long())

    def watermark_loss(self, world, unet, key: Key, seed: int) -> torch.Tensor:
        sched = training_scheduler(world.pipe)
        latents, emb = self._trigger_batch(world, key, 16)
        noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, generator(seed, "wm-loss"))
        return denoising_loss(unet, sched, latents, noise, t, emb)
