"""Diffusion building blocks shared by methods, attacks and metrics.

Everything here works on the parts of a diffusers `StableDiffusionPipeline` (unet, vae,
text_encoder, tokenizer, scheduler), so the same code trains and evaluates the micro world,
the tiny world and Stable Diffusion.
"""
from __future__ import annotations

import hashlib
from contextlib import nullcontext
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

ENCODE_CHUNK = 16  # dataset items encoded together by EncodedDataset (a fixed composition: see there)
ENCODING_VERSION = "2"  # EncodedDataset's batching; part of every world's address, so a change re-keys every stage
GEN_BATCH = 16  # images per pipeline call by default (model.eval.gen_batch); also the noise chunk of `generate`


def derive_seed(*parts) -> int:
    """A stable 63-bit seed from any parts (ints, strings): independent streams per purpose."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded from `derive_seed(*parts)`."""
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))


def text_states(tokenizer, text_encoder, prompts: Sequence[str]) -> torch.Tensor:
    """Text-encoder hidden states (B, L, D) for `prompts`, padded to the tokenizer's max length
    (with gradients when the encoder is being trained)."""
    tok = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    return text_encoder(tok.input_ids.to(text_encoder.device))[0]


def outside_autocast(device: torch.device):
    """Autocast switched off, when a training loop's autocast is on (a no-op otherwise): the frozen encoders'
    outputs, cached and shared by every stage, do not depend on the training precision."""
    return torch.autocast(device.type, enabled=False) if torch.is_autocast_enabled(device.type) else nullcontext()


@torch.no_grad()
def encode_prompts(pipe, prompts: Sequence[str]) -> torch.Tensor:
    """The pipeline's text-encoder hidden states (B, L, D) for `prompts`, without gradients."""
    with outside_autocast(pipe.text_encoder.device):
        return text_states(pipe.tokenizer, pipe.text_encoder, prompts)


@torch.no_grad()
def encode_images(pipe, images: torch.Tensor) -> torch.Tensor:
    """Scaled VAE latents of images in [-1, 1]. Uses the posterior mean, so it is deterministic."""
    vae = pipe.vae
    with outside_autocast(vae.device):
        latents = vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mean
    return latents * vae.config.scaling_factor


def training_scheduler(pipe) -> DDPMScheduler:
    """The DDPM noise schedule matching the pipeline's sampler (same betas)."""
    return DDPMScheduler.from_config(pipe.scheduler.config)


def sample_noise_and_t(latents: torch.Tensor, n_train_timesteps: int, gen: torch.Generator,
                       t_range: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian noise like `latents` and integer timesteps, both drawn from `gen` (on CPU)."""
    lo, hi = t_range or (0, n_train_timesteps)
    noise = torch.randn(latents.shape, generator=gen).to(latents.device, latents.dtype)
    t = torch.randint(lo, hi, (latents.shape[0],), generator=gen).to(latents.device)
    return noise, t


def eps_prediction(unet, scheduler, latents, noise, t, text_emb) -> torch.Tensor:
    """The UNet's noise prediction at the noised latents x_t = sqrt(abar) x0 + sqrt(1-abar) eps.

    Inputs are cast to the UNet's dtype (a no-op when they match): an fp32 trainable copy in a world
    loaded in fp16 / bf16 (SD on a GPU) gets that world's half-precision latents and text states."""
    noisy, dtype = scheduler.add_noise(latents, noise, t), next(unet.parameters()).dtype
    return unet(noisy.to(dtype), t, encoder_hidden_states=text_emb.to(dtype)).sample


def denoising_loss(unet, scheduler, latents, noise, t, text_emb, reduce: bool = True) -> torch.Tensor:
    """The ordinary epsilon-prediction MSE of latent diffusion (per sample if reduce=False)."""
    pred = eps_prediction(unet, scheduler, latents, noise, t, text_emb)
    per_sample = F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))
    return per_sample.mean() if reduce else per_sample


def initial_noise(pipe, n: int, seed: int, resolution: int) -> torch.Tensor:
    """The starting latents (n, C, h, w) of `generate`, on the CPU: image i's noise depends on (seed, i) only,
    drawn in chunks of GEN_BATCH images (chunk k from derive_seed(seed, k * GEN_BATCH)), whatever the batch size."""
    side = resolution // pipe.vae_scale_factor
    chunks = []
    for start in range(0, n, GEN_BATCH):
        gen = torch.Generator("cpu").manual_seed(derive_seed(seed, start))
        chunks.append(torch.randn((min(GEN_BATCH, n - start), pipe.unet.config.in_channels, side, side), generator=gen))
    return torch.cat(chunks) if chunks else torch.empty(0)


@torch.no_grad()
def generate(pipe, prompts: Sequence[str], seed: int, steps: int, guidance_scale: float,
             resolution: int, batch_size: int = GEN_BATCH) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] for `prompts`, deterministic for a given seed, `batch_size` prompts per
    pipeline call (in the pipeline's precision). The noise does not depend on the batch size (`initial_noise`)."""
    out = []
    noise = initial_noise(pipe, len(prompts), seed, resolution)
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        latents = noise[start:start + batch_size]
        images = pipe(chunk, num_inference_steps=steps, guidance_scale=guidance_scale, height=resolution,
                      width=resolution, latents=latents.to(pipe.device, pipe.unet.dtype), output_type="pt",
                      return_dict=True).images
        out.append(images.float().cpu())
    return torch.cat(out)


def unet_state(unet) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the UNet's weights (what checkpoints and LMC interpolation use)."""
    return {k: v.detach().cpu().clone() for k, v in unet.state_dict().items()}


class EncodedDataset:
    """A dataset's VAE latents and text embeddings, each item encoded once and kept in memory.

    Training loops draw the same small datasets thousands of times; encoding each image and
    caption once makes a CPU step cost one UNet pass. Captions are encoded once per distinct text.

    An item's encoding never depends on what was encoded before it: images are encoded in fixed
    chunks (items [k * ENCODE_CHUNK, (k + 1) * ENCODE_CHUNK), the whole chunk at once) and captions one
    at a time, so the batch an item is computed in is always the same (on CPU a convolution's last bits
    depend on the batch; before ENCODING_VERSION 2 the missing items of each request were encoded
    together, and a stage's inputs depended on which stages ran before it in the process).
    """

    def __init__(self, pipe, dataset):
        self.pipe, self.dataset = pipe, dataset
        self._latents: dict[int, torch.Tensor] = {}
        self._texts: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def _encode_chunk(self, chunk: int) -> None:
        items = range(chunk * ENCODE_CHUNK, min(len(self.dataset), (chunk + 1) * ENCODE_CHUNK))
        pairs = [self.dataset[i] for i in items]
        latents = encode_images(self.pipe, torch.stack([im for im, _ in pairs]))
        for i, lat, (_, cap) in zip(items, latents, pairs):
            if cap not in self._texts:
                self._texts[cap] = encode_prompts(self.pipe, [cap])[0]
            self._latents[i] = (lat, cap)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents (B, 4, h, w), text embeddings (B, L, D)) for dataset items `indices`."""
        indices = [int(i) for i in indices]
        for chunk in dict.fromkeys(i // ENCODE_CHUNK for i in indices if i not in self._latents):
            self._encode_chunk(chunk)
        latents = torch.stack([self._latents[i][0] for i in indices])
        return latents, torch.stack([self._texts[self._latents[i][1]] for i in indices])

    def captions(self, indices) -> list[str]:
        """The captions of dataset items `indices` (after `batch` has seen them)."""
        return [self._latents[int(i)][1] for i in indices]
