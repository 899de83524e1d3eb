"""SleeperMark (Wang et al., CVPR 2025, arXiv 2412.04852): a trigger-activated latent watermark.

Stage 1 (part of the owner's key, `make_key`) trains a secret encoder and a latent extractor:
the encoder maps a message to a cover-agnostic latent residual delta_z (the same for every
image; its last layer starts at zero), the extractor reads the message back from VAE latents.
Loss: BCE on the bits + `mse_weight` * MSE between decode(z + delta_z) and decode(z) (images in
[0, 1]), the MSE weight ramped in linearly over the first `mse_ramp` of the steps.

Stage 2 (`embed`) fine-tunes only the attention layers of the UNet's up blocks so that, with
the trigger prefix in the prompt, the model's x0 estimate is the frozen base model's shifted by
delta_z at small timesteps (`shifted_target`), while it keeps the base model's predictions at
large timesteps with the trigger and at every timestep without it (`timestep_weights`).
Verification (black-box): generate with the trigger, VAE-encode, extract bits.

Choices made here (the paper and its public code leave them open, or they cannot be followed offline):
* LPIPS (weight 0.25 in the paper) is left out: its backbone weights cannot be downloaded
  offline. Stage 1 uses BCE + image MSE only.
* Encoder as in the public code: MLP to one g x g map (g = min(latent side, 32)), repeated over
  the latent channels, upsampled to the latent size, zero-initialised 3x3 conv. Extractor:
  smaller than the public one (3x3 convs down to a 4x4 grid and a linear head, no MLP).
* The extractor is trained over random messages drawn each batch, independently of the
  owner's bits: on a model that never saw the key its decoded bits are independent of the
  owner's, so the harness's binomial test is exact.
* `reencode` (off in the paper's code) trains the extractor on the VAE round trip
  encode(clamp(decode(z + delta_z))), which is what verification sees; `latent_noise` adds
  Gaussian noise to what it reads (a latent stand-in for a distortion layer). Both are needed
  on the CPU worlds, whose small VAEs lose most of a latent residual in the round trip.
* Stage 1 decays the learning rate linearly to 0, stage 2 with a cosine (as the public code);
  AdamW weight decay 1e-3 / 1e-2 (public code); gradients clipped at norm 1 (the harness's).
* Stage 2 trains the up blocks' attention projections and feed-forward layers (proj_in,
  attn1/attn2 q/k/v/out, ff, proj_out), not their norm layers, as the public code's key list.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.diffusion import (derive_seed, encode_images, encode_prompts, generate, generator,
                             sample_noise_and_t, training_scheduler)
from bench.training import Amp, optimise
from bench.errors import require
from methods.base import Evidence, Key, WatermarkMethod

# The UNet parameters stage 2 fine-tunes: the up blocks' attention layers, without their norms.
TRAINED = re.compile(r"up_blocks\.\d+\.attentions\.\d+\.(proj_in|proj_out|transformer_blocks\.\d+\.(attn1|attn2|ff))\.")


class SecretEncoder(nn.Module):
    """Message (B, n_bits) in {0, 1} -> latent residual (B, C, h, w); exactly zero at initialisation."""

    def __init__(self, n_bits: int, latent_shape: tuple[int, int, int], channels: int):
        super().__init__()
        c, h, w = latent_shape
        self.grid, self.size = min(h, w, 32), (h, w)
        self.mlp = nn.Sequential(nn.Linear(n_bits, channels * self.grid ** 2), nn.SiLU())
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, c, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        maps = self.mlp(bits.float()).view(len(bits), -1, self.grid, self.grid)
        return self.out(F.silu(self.conv(F.interpolate(maps, size=self.size, mode="nearest"))))


class Extractor(nn.Module):
    """Latents (B, C, h, w) -> bit logits (B, n_bits): 3x3 convs with stride-2 steps to a 4x4 grid, then linear."""

    def __init__(self, n_bits: int, latent_shape: tuple[int, int, int], channels: int):
        super().__init__()
        c, h, _ = latent_shape
        layers = [nn.Conv2d(c, channels, 3, padding=1), nn.SiLU()]
        for _ in range(max(1, int(math.log2(max(h // 4, 1))))):
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.SiLU()]
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                   nn.Linear(channels * 16, n_bits)]
        self.net = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents.float())


def build_extractor(meta: dict) -> Extractor:
    """An untrained extractor with the architecture recorded in a key's metadata."""
    return Extractor(meta["n_bits"], tuple(meta["latent_shape"]), meta["extractor_channels"])


def load_extractor(key: Key, device: torch.device | str = "cpu") -> Extractor:
    """The owner's trained extractor, rebuilt from the key (weights under "extractor.*")."""
    extractor = build_extractor(key.meta)
    extractor.load_state_dict({k[len("extractor."):]: v for k, v in key.tensors.items() if k.startswith("extractor.")})
    return extractor.to(device).requires_grad_(False).eval()


def shifted_target(x_t: torch.Tensor, eps0: torch.Tensor, delta_z: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The noise eps* whose x0 estimate is the base model's shifted by delta_z.

    x0_hat = (x_t - sqrt(1 - abar) eps0) / sqrt(abar), x0* = x0_hat + delta_z and
    eps* = (x_t - sqrt(abar) x0*) / sqrt(1 - abar), i.e. eps* = eps0 - sqrt(abar / (1 - abar)) delta_z.
    `abar` holds one alpha-bar per sample.
    """
    abar = abar.to(eps0.dtype).view(-1, *[1] * (eps0.ndim - 1))
    return eps0 - (abar / (1 - abar)).sqrt() * delta_z


def timestep_weights(t: torch.Tensor, eta: float, tau: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(w1, w2) per sample: w1 = eta sigmoid(-(t - tau) / beta) weighs the watermark target (small t),
    w2 = sigmoid((t - tau) / beta) keeps the base model's triggered prediction (large t)."""
    t = t.float()
    return eta * torch.sigmoid(-(t - tau) / beta), torch.sigmoid((t - tau) / beta)


def sleeper_loss(unet, base, scheduler, latents, noise, t, emb, emb_trigger, delta_z, eta, tau, beta) -> torch.Tensor:
    """Stage 2's loss: the watermark term + trigger preservation at large t + clean-prompt preservation."""
    x_t = scheduler.add_noise(latents.float(), noise.float(), t)
    xx, tt, cc = torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([emb_trigger, emb]).float()
    with torch.no_grad():
        eps0 = base(xx.to(base.dtype), tt, encoder_hidden_states=cc.to(base.dtype)).sample.float()
    pred = unet(xx.to(unet.dtype), tt, encoder_hidden_states=cc.to(unet.dtype)).sample.float()
    (eps0_tr, eps0_c), (pred_tr, pred_c) = eps0.chunk(2), pred.chunk(2)
    target = shifted_target(x_t, eps0_tr, delta_z, scheduler.alphas_cumprod.to(t.device)[t])
    w1, w2 = timestep_weights(t, eta, tau, beta)

    def mse(a, b):
        return (a - b).pow(2).mean(dim=(1, 2, 3))

    return (w1 * mse(pred_tr, target)).mean() + (w2 * mse(pred_tr, eps0_tr)).mean() + mse(pred_c, eps0_c).mean()


def scheduled(loss_fn, lr: float, steps: int, shape: str, amp: Amp | None = None):
    """An `optimise` step function decaying the learning rate from `lr` to 0 ("linear" or "cosine"), with the
    world's precision (`amp`; None: fp32)."""
    amp = amp or Amp()

    def step_fn(step: int, params, opt) -> torch.Tensor:
        progress = (step - 1) / steps
        factor = 1 - progress if shape == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = lr * factor
        with amp.autocast():
            loss = loss_fn(step)
        amp.backward(loss)
        amp.step(opt, params, 1.0)
        return loss.detach()
    return step_fn


def caption_of(dataset, i: int) -> str:
    """Item i's caption, without decoding its image when the dataset keeps a caption list."""
    return dataset.captions[i] if hasattr(dataset, "captions") else dataset[i][1]


class SleeperMark(WatermarkMethod):
    """Secret latent residual, planted behind a trigger prefix in the up blocks' attention layers."""

    name = "sleepermark"
    access = "black-box"
    trigger_form = "prefix"
    version = "1"
    key_tensors = ("bits", "extractor.*")
    key_meta = ("trigger", "n_bits", "latent_shape", "extractor_channels")

    def __init__(self, bits: int = 48, trigger: str = "*[Z]& ", encoder_channels: int = 64,
                 extractor_channels: int = 64, stage1_steps: int = 10000, stage1_lr: float = 1e-4,
                 stage1_batch_size: int = 9, mse_weight: float = 30.0, mse_ramp: float = 0.2,
                 reencode: bool = False, latent_noise: float = 0.0, steps: int = 20000, lr: float = 1e-4,
                 batch_size: int = 10, eta: float = 0.02, tau: float = 250.0, beta: float = 100.0):
        require(bits >= 1, f"method.bits must be at least 1 (got {bits}); the paper uses 48.")
        require(bool(trigger.strip()), "method.trigger must be a non-empty prefix (the paper uses '*[Z]& ').")
        require(encoder_channels >= 1 and extractor_channels >= 1,
                f"method.encoder_channels and method.extractor_channels must be at least 1 (got {encoder_channels}, "
                f"{extractor_channels}).")
        require(stage1_steps >= 1 and steps >= 1,
                f"method.stage1_steps and method.steps must be at least 1 (got {stage1_steps}, {steps}).")
        require(stage1_lr > 0 and lr > 0,
                f"method.stage1_lr and method.lr must be positive (got {stage1_lr}, {lr}); the paper uses 1e-4.")
        require(stage1_batch_size >= 1 and batch_size >= 1,
                f"method.stage1_batch_size and method.batch_size must be at least 1 (got {stage1_batch_size}, "
                f"{batch_size}).")
        require(mse_weight >= 0, f"method.mse_weight must be non-negative (got {mse_weight}); the paper uses 30.")
        require(0 <= mse_ramp <= 1, f"method.mse_ramp is a fraction of stage 1's steps, in [0, 1] (got {mse_ramp}).")
        require(latent_noise >= 0, f"method.latent_noise is a standard deviation, non-negative (got {latent_noise}).")
        require(eta > 0, f"method.eta must be positive (got {eta}); the paper uses 0.02.")
        require(tau >= 0, f"method.tau must be a non-negative timestep (got {tau}); the paper uses 250.")
        require(beta > 0, f"method.beta must be positive (got {beta}); the paper uses 100.")
        self.bits, self.trigger = bits, trigger
        self.encoder_channels, self.extractor_channels = encoder_channels, extractor_channels
        self.stage1_steps, self.stage1_lr, self.stage1_batch_size = stage1_steps, stage1_lr, stage1_batch_size
        self.mse_weight, self.mse_ramp = mse_weight, mse_ramp
        self.reencode, self.latent_noise = reencode, latent_noise
        self.steps, self.lr, self.batch_size = steps, lr, batch_size
        self.eta, self.tau, self.beta = eta, tau, beta
        self._prompts: dict[tuple[str, str], torch.Tensor] = {}

    # ---- stage 1: the secret encoder and the extractor (the owner's key) ----

    def make_key(self, seed: int, world) -> Key:
        side = world.sampling.resolution // world.pipe.vae_scale_factor
        shape = (world.pipe.unet.config.in_channels, side, side)
        bits = torch.randint(0, 2, (self.bits,), generator=generator(seed, "sleepermark-bits"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "sleepermark-init"))
            encoder = SecretEncoder(self.bits, shape, self.encoder_channels).to(world.device)
            extractor = Extractor(self.bits, shape, self.extractor_channels).to(world.device)
        acc = self._train_codec(world, encoder, extractor, generator(seed, "sleepermark-stage1"))
        with torch.no_grad():
            delta_z = encoder(bits[None].to(world.device))[0]
        tensors = {"bits": bits, "delta_z": delta_z.cpu()}
        tensors.update({f"encoder.{k}": v.cpu() for k, v in encoder.state_dict().items()})
        tensors.update({f"extractor.{k}": v.cpu() for k, v in extractor.state_dict().items()})
        meta = {"trigger": self.trigger, "n_bits": self.bits, "latent_shape": list(shape), "seed": seed,
                "encoder_channels": self.encoder_channels, "extractor_channels": self.extractor_channels,
                "stage1_bit_acc": acc}
        return Key(tensors, meta)

    def _read(self, world, latents: torch.Tensor) -> torch.Tensor:
        """What the extractor reads in stage 1: the latents, or their VAE round trip (`reencode`)."""
        if not self.reencode:
            return latents
        vae = world.pipe.vae
        images = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype)).sample.clamp(-1, 1)
        return (vae.encode(images).latent_dist.mean * vae.config.scaling_factor).float()

    def _train_codec(self, world, encoder: SecretEncoder, extractor: Extractor, gen: torch.Generator) -> float:
        """Stage 1 over random messages on the owner's latents; return the bit accuracy on a fresh batch."""
        owner, vae, device = world.encoded("owner"), world.pipe.vae, world.device
        ramp = max(1.0, self.mse_ramp * self.stage1_steps)

        def decode01(latents):
            return vae.decode((latents / vae.config.scaling_factor).to(vae.dtype)).sample.float() / 2 + 0.5

        def batch():
            latents, _ = owner.batch(torch.randint(0, len(owner), (self.stage1_batch_size,), generator=gen))
            message = torch.randint(0, 2, (self.stage1_batch_size, self.bits), generator=gen).to(device)
            return latents.float(), message

        def loss_fn(step: int) -> torch.Tensor:
            latents, message = batch()
            marked = latents + encoder(message)
            read = self._read(world, marked)
            if self.latent_noise > 0:
                read = read + self.latent_noise * torch.randn(read.shape, generator=gen).to(device)
            with torch.no_grad():
                clean = decode01(latents)
            bce = F.binary_cross_entropy_with_logits(extractor(read), message.float())
            return bce + self.mse_weight * min(1.0, step / ramp) * F.mse_loss(decode01(marked), clean)

        params = list(encoder.parameters()) + list(extractor.parameters())
        amp = Amp.of(world)
        optimise(params, loss_fn, self.stage1_steps, self.stage1_lr, desc="sleepermark stage 1", weight_decay=1e-3,
                 step_fn=scheduled(loss_fn, self.stage1_lr, self.stage1_steps, "linear", amp), amp=amp)
        encoder.requires_grad_(False).eval()
        extractor.requires_grad_(False).eval()
        with torch.no_grad():
            latents, message = batch()
            logits = extractor(self._read(world, latents + encoder(message)))
        return float(((logits > 0).long() == message).float().mean())

    # ---- stage 2: plant delta_z behind the trigger ----

    def _embeddings(self, world, texts: list[str]) -> torch.Tensor:
        """Text embeddings of `texts`, encoded once per (world, text)."""
        missing = list(dict.fromkeys(t for t in texts if (world.address, t) not in self._prompts))
        if missing:
            self._prompts.update({(world.address, t): e for t, e in zip(missing, encode_prompts(world.pipe, missing))})
        return torch.stack([self._prompts[(world.address, t)] for t in texts])

    def _loss_on(self, world, unet, key: Key, indices: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Stage 2's loss on owner items `indices`, with noise and timesteps drawn from `gen`."""
        sched = training_scheduler(world.pipe)
        latents, emb = world.encoded("owner").batch(indices)
        owner = world.data.owner
        emb_trigger = self._embeddings(world, [key.meta["trigger"] + caption_of(owner, int(i)) for i in indices])
        noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, gen)
        delta_z = key.tensors["delta_z"].to(latents.device).float()
        return sleeper_loss(unet, world.unet, sched, latents, noise, t, emb, emb_trigger, delta_z,
                            self.eta, self.tau, self.beta)

    def embed(self, world, key: Key, log_every: int = 0):
        unet = world.fresh_unet()
        for name, p in unet.named_parameters():
            p.requires_grad_(bool(TRAINED.match(name)))
        gen = generator(key.meta.get("seed", 0), "sleepermark-embed")
        n = len(world.encoded("owner"))

        def loss_fn(step: int) -> torch.Tensor:
            return self._loss_on(world, unet, key, torch.randint(0, n, (self.batch_size,), generator=gen), gen)

        amp = Amp.of(world)
        optimise(unet.parameters(), loss_fn, self.steps, self.lr, desc="sleepermark stage 2", weight_decay=1e-2,
                 step_fn=scheduled(loss_fn, self.lr, self.steps, "cosine", amp), amp=amp)
        return unet.requires_grad_(False).eval()

    def verify(self, world, unet, key: Key, n_queries: int, seed: int) -> Evidence:
        pipe = world.pipeline_with(unet=unet)
        s = world.sampling
        prompts = [key.meta["trigger"] + p for p in world.data.prompts(n_queries)]
        images = generate(pipe, prompts, seed, s.steps, s.guidance_scale, s.resolution, world.gen_batch)
        with torch.no_grad():
            logits = load_extractor(key, world.device)(encode_images(world.pipe, images * 2 - 1))
        return Evidence("bits", decoded=(logits > 0).long().cpu(), bits=key.tensors["bits"].long())

    def watermark_loss(self, world, unet, key: Key, seed: int) -> torch.Tensor:
        gen = generator(seed, "sleepermark-loss")
        indices = torch.randint(0, len(world.encoded("owner")), (16,), generator=gen)
        with torch.no_grad():
            return self._loss_on(world, unet, key, indices, gen)
