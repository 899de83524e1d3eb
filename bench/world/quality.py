"""How good is a built world? Prompt fidelity, FID against real hold-out images, a sample grid.

* prompt fidelity: images generated from one prompt per class ("a photo of a sneaker") are
  classified zero-shot by the world's CLIP; the share whose class matches the prompt.
* FID (real Inception weights) of generated images (prompts = hold-out captions) against real
  hold-out images, next to the FID between real Fashion-MNIST and real MNIST for scale.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torchvision.utils import save_image
from transformers import CLIPModel

from bench.cache import write_json_atomic
from bench.data.base import batch_of
from bench.data.tiny import class_prompts
from bench.diffusion import generate
from bench.metrics import inception
from bench.world.tiny import clip_pixels, tokenize


def to_uint8(images01: torch.Tensor) -> torch.Tensor:
    return (images01 * 255).round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def zero_shot(clip: CLIPModel, tokenizer, images01: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """The index of the prompt whose CLIP text embedding is closest to each image."""
    img = clip.get_image_features(pixel_values=clip_pixels(images01 * 2 - 1))
    txt = clip.get_text_features(input_ids=tokenize(tokenizer, prompts))
    img, txt = (x if isinstance(x, torch.Tensor) else x.pooler_output for x in (img, txt))
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    return (img @ txt.T).argmax(1)


def measure(world, out_dir: Path, n_fidelity: int = 500, n_fid: int = 1000, seed: int = 0) -> dict:
    """Write quality.json and samples.png into `out_dir`; return the figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    s, start = world.sampling, time.perf_counter()
    clip = CLIPModel.from_pretrained(world.clip_path).eval()
    prompts = class_prompts()
    labels = torch.arange(n_fidelity) % len(prompts)
    fidelity_images = generate(world.pipe, [prompts[i] for i in labels], seed, s.steps, s.guidance_scale, s.resolution)
    predicted = zero_shot(clip, world.pipe.tokenizer, fidelity_images, prompts)
    holdout = world.data.holdout
    real, captions = batch_of(holdout, range(min(n_fid, len(holdout))))
    generated = generate(world.pipe, captions, seed + 1, s.steps, s.guidance_scale, s.resolution)
    ref = inception.stats(inception.features(to_uint8((real + 1) / 2)))
    fid = inception.fid(inception.features(to_uint8(generated)), ref)
    attacker, _ = batch_of(world.data.attacker, range(min(n_fid, len(world.data.attacker))))
    fid_real_vs_attacker = inception.fid(inception.features(to_uint8((attacker + 1) / 2)), ref)
    grid = torch.cat([fidelity_images[labels == c][:8] for c in range(len(prompts))])
    save_image(grid, out_dir / "samples.png", nrow=8, padding=1)
    figures = {
        "prompt_fidelity": float((predicted == labels).float().mean()),
        "prompt_fidelity_n": n_fidelity,
        "per_class_fidelity": {p: float((predicted[labels == c] == c).float().mean()) for c, p in enumerate(prompts)},
        "fid_generated_vs_holdout": fid,
        "fid_attacker_data_vs_holdout": fid_real_vs_attacker,
        "fid_n": len(real),
        "sampling": vars(s),
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_json_atomic(out_dir / "quality.json", figures)
    return figures
