"""`model=sd15_random`: Stable Diffusion 1.5's architecture with random weights, built offline.

The UNet (860M parameters), the VAE (84M) and the CLIP ViT-L/14 text tower (123M) are built from
the published SD 1.5 configs kept in `bench/world/configs/sd15/` (unet.json, vae.json,
text_encoder.json, scheduler.json: the PNDM sampler SD ships, whose betas the harness's DDPM
training schedule reuses), randomly initialised from `seed`, with the genuine CLIP tokenizer
(`bench.data.tokenizer`, 77 tokens). CLIP score uses a small random CLIP. Nothing is trained.

What it is for: running the exact `model=sd15` code path (same `load_world`, `scale: sd`, the SD
budgets, 77-token prompts, 64x64x4 latents at 512 px) where the real weights cannot be had:
memory, speed and GPU checks (`python -m bench.tools.perf model=sd15_random`). Every quality number
it gives (bit accuracy, FID, CLIP score) means nothing.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from bench.data.tokenizer import build_clip_tokenizer
from bench.world.base import DTYPES
from bench.world.micro import clip_processor, clip_with_text_encoder
from bench.world.spec import ModelSpec
from bench.errors import require

CONFIGS = Path(__file__).resolve().parent / "configs" / "sd15"


def sd15_config(part: str) -> dict:
    """The published SD 1.5 config of `part` (unet, vae, text_encoder, scheduler), without its `_` metadata keys."""
    return {k: v for k, v in json.loads((CONFIGS / f"{part}.json").read_text()).items() if not k.startswith("_")}


def sd15_parts(seed: int = 0):
    """(unet, vae, text_encoder, scheduler) of SD 1.5's architecture, randomly initialised from `seed` (fp32)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(sd15_config("unet"))
        vae = AutoencoderKL.from_config(sd15_config("vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(sd15_config("text_encoder")))
    return unet, vae, text_encoder, PNDMScheduler.from_config(sd15_config("scheduler"))


class SD15RandomModel(ModelSpec):
    """Builds the random SD 1.5 world into a folder: `pipeline/` (StableDiffusionPipeline) and `clip/`."""

    version = "1"
    built = True

    def __init__(self, resolution: int = 512, seed: int = 0, storage: str = "fp16", clip: dict | None = None,
                 sampling: dict | None = None, precision: str = "fp32", name: str = "sd15_random", scale: str = "sd",
                 eval: dict | None = None, unet_weights: str | None = None, **training):
        super().__init__(name, scale, resolution, precision, sampling, eval, unet_weights, **training)
        require(storage in DTYPES, f"model.storage must be one of {sorted(DTYPES)} (got {storage!r}).")
        self.seed, self.storage = seed, storage
        self.clip_cfg = {"width": 64, "layers": 2, "image_size": 224, "patch": 32, **(clip or {})}

    def build(self, out: Path) -> None:
        tokenizer = build_clip_tokenizer(out / "tokenizer-build")  # model_max_length 77, pad <|endoftext|>
        unet, vae, text_encoder, scheduler = sd15_parts(self.seed)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.to(dtype=DTYPES[self.storage])  # random weights lose nothing in fp16: half the disk (1.7 GB UNet)
        pipe.save_pretrained(out / "pipeline", safe_serialization=True)
        del pipe, unet, vae, text_encoder
        c = self.clip_cfg
        clip, _ = clip_with_text_encoder(c["width"], c["image_size"], c["patch"], c["layers"], self.seed + 1)
        clip.save_pretrained(out / "clip", safe_serialization=True)
        clip_processor(tokenizer, c["image_size"]).save_pretrained(out / "clip")
        shutil.rmtree(out / "tokenizer-build")
