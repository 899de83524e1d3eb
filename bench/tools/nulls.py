"""Null models that never saw any key, for false-positive rates and ROC curves (`bench.tools.roc`).

* **Independent UNets**: a UNet of the world's architecture, initialised from another seed and
  trained from scratch on the world's owner data (`data.owner`, a subset of the images the world
  was pre-trained on; on the tiny world its 2,000 Fashion-MNIST rows) with the world's own recipe
  (`bench.world.tiny.train_unet`: AdamW, one-cycle lr, 10% caption dropout), for a shorter budget
  than the world's (`steps`). Its quality (held-out denoising loss, FID) is measured and stated by
  `bench.tools.roc`.
* **Their fine-tunes and distillates**: any attack of the harness applied to them (`attack_stage`
  with the attack's config, e.g. full_ft and distill), cached like every attack.
* **Other worlds**: the same world spec built with another `model.seed` (every part retrained:
  CLIP, VAE, UNet), verified in its own pipeline.

Every null model is cached by content address like a stage output, so an interrupted measurement
resumes and a second one costs nothing.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from bench.cache import Cache
from bench.diffusion import derive_seed, encode_prompts, generator
from bench.metrics.base import ModelRef
from bench.world.base import World, write_weights
from bench.world.tiny import train_unet

VERSION = "1"


def independent_unet(cache: Cache, world: World, seed: int, steps: int, batch: int = 32, lr: float = 1e-3,
                     cond_drop: float = 0.1) -> ModelRef:
    """A UNet of the world's architecture trained from scratch (init and data order from `seed`)."""
    key = {"world": world.address, "data": len(world.data.owner), "seed": seed, "steps": steps, "batch": batch,
           "lr": lr, "cond_drop": cond_drop}

    def build(tmp: Path) -> None:
        start = time.perf_counter()
        owner = world.encoded("owner")
        latents, _ = owner.batch(range(len(owner)))
        captions = owner.captions(range(len(owner)))
        texts = sorted(set(captions))
        table = encode_prompts(world.pipe, texts + [""])  # the last row is the empty prompt (caption dropout)
        ids = torch.tensor([texts.index(c) for c in captions])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "independent-unet"))
            unet = UNet2DConditionModel.from_config(world.unet.config).to(world.device).train()
        sched = DDPMScheduler.from_config(world.pipe.scheduler.config)
        loss = train_unet(unet, sched, latents.float(), ids, table.float(), steps, batch, lr, cond_drop,
                          generator(seed, "independent-unet-data"))
        write_weights(unet.state_dict(), tmp / "unet.safetensors")
        (tmp / "train.json").write_text(json.dumps({"final_loss": loss, "seconds": time.perf_counter() - start,
                                                    **key}, indent=1))

    art = cache.get_or_build("null-unet", VERSION, key, build)
    return ModelRef(f"null-unet:{art.address}", art.path / "unet.safetensors")
