"""The tiny world: a real, offline, CPU-sized text-to-image model trained by the harness.

Built on first use from Fashion-MNIST (50k pre-training rows, 32x32 RGB, captions from class
names and templates) and cached: a small CLIP trained contrastively (its text tower becomes the
pipeline's text encoder, as CLIP's is in Stable Diffusion; the whole model scores CLIP score and
classifies zero-shot), an AutoencoderKL (32x32 -> 8x8x4) and a UNet2DConditionModel trained as
a latent diffusion model with 10% caption dropout for classifier-free guidance. Saved as a
standard StableDiffusionPipeline folder plus a CLIP folder.

Choice: the tokenizer is CLIP's, with `model_max_length` 16 instead of 77 (every caption here is
at most 12 tokens; cross-attention over 77 padded tokens would cost 5x more CPU time). With
SleeperMark's trigger prefix (5 tokens), 2 of the 50 caption forms reach 17 tokens and lose their last token,
the same way at embedding and at verification; diffusers' warning about it is shown once per process.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import CLIPTextModel

from bench.data.fashion_mnist import TEMPLATES
from bench.data.tiny import PRETRAIN, as_labels, fashion
from bench.data.tokenizer import build_clip_tokenizer
from bench.diffusion import generator, sample_noise_and_t
from bench.world.micro import clip_processor, clip_with_text_encoder, sd_scheduler
from bench.world.spec import ModelSpec

log = logging.getLogger(__name__)
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] normalised as CLIPImageProcessor does (rescale to [0, 1], CLIP mean/std)."""
    return ((images + 1) / 2 - CLIP_MEAN) / CLIP_STD


def tokenize(tokenizer, texts) -> torch.Tensor:
    return tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def _loop(steps: int, desc: str):
    return tqdm(range(steps), desc=desc, mininterval=2.0)


def train_clip(clip, tokenizer, images, labels, captions, steps, batch, lr, gen) -> float:
    """Contrastive training with class-aware targets: captions of the same class are all positives."""
    opt = torch.optim.AdamW(clip.parameters(), lr=lr, weight_decay=0.01)
    ids = tokenize(tokenizer, captions)
    for _ in (bar := _loop(steps, "world: CLIP")):
        idx = torch.randint(0, len(labels), (batch,), generator=gen)
        out = clip(input_ids=ids[idx], pixel_values=clip_pixels(images[idx]))
        same = (labels[idx][:, None] == labels[idx][None, :]).float()
        target = same / same.sum(1, keepdim=True)
        loss = -(target * out.logits_per_image.log_softmax(1)).sum(1).mean() \
               - (target * out.logits_per_text.log_softmax(1)).sum(1).mean()
        opt.zero_grad()
        (loss / 2).backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item() / 2:.3f}", refresh=False)
    return loss.item() / 2


def train_vae(vae, images, steps, batch, lr, kl, gen) -> float:
    """Reconstruction (MSE) + a small KL term; returns the final reconstruction loss."""
    opt = torch.optim.AdamW(vae.parameters(), lr=lr)
    for _ in (bar := _loop(steps, "world: VAE")):
        x = images[torch.randint(0, len(images), (batch,), generator=gen)]
        post = vae.encode(x).latent_dist
        rec = F.mse_loss(vae.decode(post.sample(generator=gen)).sample, x)
        opt.zero_grad()
        (rec + kl * post.kl().mean()).backward()
        opt.step()
        bar.set_postfix(rec=f"{rec.item():.4f}", refresh=False)
    return rec.item()


WARMUP = 0.05  # train_unet's one-cycle warm-up, a fraction of the steps


def train_unet(unet, scheduler, latents, caption_ids, text_table, steps, batch, lr, cond_drop, gen) -> float:
    """Latent diffusion (epsilon MSE); caption replaced by the empty prompt (last row) with prob cond_drop."""
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    lr_at = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=WARMUP)
    empty = len(text_table) - 1
    for _ in (bar := _loop(steps, "world: UNet")):
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        cap = caption_ids[idx].clone()
        cap[torch.rand(batch, generator=gen) < cond_drop] = empty
        x0 = latents[idx]
        noise, t = sample_noise_and_t(x0, scheduler.config.num_train_timesteps, gen)
        pred = unet(scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=text_table[cap]).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr_at.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return loss.item()


class TinyModel(ModelSpec):
    """Builds the tiny world into a folder: `pipeline/`, `clip/` and `build.json` (timings, losses)."""

    built = True
    shippable = True
    version = "1"

    def __init__(self, resolution: int = 32, seed: int = 0, data_root: str | None = None, n_pretrain: int = 50_000,
                 max_text_length: int = 16, clip: dict | None = None, vae: dict | None = None,
                 unet: dict | None = None, sampling: dict | None = None, precision: str = "fp32",
                 name: str = "tiny", scale: str = "tiny", eval: dict | None = None, unet_weights: str | None = None,
                 **training):
        super().__init__(name, scale, resolution, precision, sampling, eval, unet_weights, **training)
        self.seed, self.data_root, self.n_pretrain, self.max_text_length = seed, data_root, n_pretrain, max_text_length
        self.clip_cfg = {"width": 64, "layers": 3, "patch": 8, "steps": 400, "batch": 128, "lr": 1e-3, **(clip or {})}
        self.vae_cfg = {"channels": [16, 32, 32], "steps": 600, "batch": 32, "lr": 2e-3, "kl": 1e-6, **(vae or {})}
        self.unet_cfg = {"channels": [32, 64], "layers_per_block": 1, "steps": 3000, "batch": 32, "lr": 1e-3,
                         "cond_drop": 0.1, **(unet or {})}

    def build(self, out: Path) -> None:
        start, report = time.perf_counter(), {}
        torch.manual_seed(self.seed)
        gen = generator(self.seed, "tiny-world")
        data, labels = fashion("train", PRETRAIN, self.resolution, self.n_pretrain, self.seed, self.data_root)
        images, labels = data.images, as_labels(labels)
        tokenizer = build_clip_tokenizer(out / "tokenizer-build")
        tokenizer.model_max_length = self.max_text_length
        c = self.clip_cfg
        clip, _ = clip_with_text_encoder(c["width"], self.resolution, c["patch"], c["layers"], self.seed)
        report["clip_loss"] = train_clip(clip.train(), tokenizer, images, labels, data.captions, c["steps"], c["batch"],
                                         c["lr"], gen)
        clip.eval().requires_grad_(False)
        text_encoder = CLIPTextModel(clip.config.text_config)
        text_encoder.load_state_dict(clip.text_model.state_dict())
        text_encoder.eval().requires_grad_(False)

        v = self.vae_cfg
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(v["channels"]),
                            up_block_types=("UpDecoderBlock2D",) * len(v["channels"]), block_out_channels=v["channels"],
                            latent_channels=4, norm_num_groups=8, layers_per_block=1, sample_size=self.resolution)
        report["vae_rec_mse"] = train_vae(vae.train(), images, v["steps"], v["batch"], v["lr"], v["kl"], gen)
        vae.eval().requires_grad_(False)
        with torch.no_grad():
            latents = torch.cat([vae.encode(images[i:i + 512]).latent_dist.mean for i in range(0, len(images), 512)])
            vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
            latents = latents * vae.config.scaling_factor
            texts = sorted(set(data.captions))
            caption_ids = torch.tensor([texts.index(cap) for cap in data.captions])
            text_table = text_encoder(tokenize(tokenizer, texts + [""]))[0]

        u = self.unet_cfg
        unet = UNet2DConditionModel(
            sample_size=self.resolution // 4, in_channels=4, out_channels=4, layers_per_block=u["layers_per_block"],
            block_out_channels=u["channels"], norm_num_groups=8,
            down_block_types=("CrossAttnDownBlock2D",) * len(u["channels"]),
            up_block_types=("CrossAttnUpBlock2D",) * len(u["channels"]),
            cross_attention_dim=c["width"], attention_head_dim=4)  # diffusers: the number of heads
        scheduler = sd_scheduler()
        report["unet_loss"] = train_unet(unet.train(), DDPMScheduler.from_config(scheduler.config),
                                         latents, caption_ids, text_table, u["steps"], u["batch"], u["lr"],
                                         u["cond_drop"], gen)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet.eval(),
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.save_pretrained(out / "pipeline", safe_serialization=True)
        clip.save_pretrained(out / "clip", safe_serialization=True)
        clip_processor(tokenizer, self.resolution).save_pretrained(out / "clip")
        shutil.rmtree(out / "tokenizer-build")
        report["seconds"] = round(time.perf_counter() - start, 1)
        report["templates"] = list(TEMPLATES)
        (out / "build.json").write_text(json.dumps(report, indent=1))
        log.info("tiny world built in %.0f s: %s", report["seconds"], report)
