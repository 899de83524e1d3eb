"""A sample grid per run, written beside its record: what the models generate.

Rows: the base model, the watermarked model, the attacked model (final checkpoint) on the first
held-out prompts, and, for a method with a text trigger (`trigger_form`), the watermarked and the
attacked model given the trigger (the whole trigger prompt, or the trigger prefixed to the same
prompts). `samples.png` holds the rows top to bottom, `samples.json` their names; the HTML report
(`bench.analysis.report`) shows them. Same seed, same images.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from bench.cache import atomic_file
from bench.diffusion import generate
from bench.metrics.base import EvalContext


def rows(ctx: EvalContext, n: int) -> list[tuple[str, object, list[str]]]:
    """(name, model, prompts) for every row of the grid."""
    prompts = ctx.world.data.prompts(n)
    out = [("base", ctx.base, prompts), ("watermarked", ctx.watermarked, prompts), ("attacked", ctx.attacked[-1], prompts)]
    trigger = ctx.key.meta.get("trigger") if ctx.method.trigger_form else None
    if trigger:
        triggered = [trigger] * n if ctx.method.trigger_form == "prompt" else [trigger + p for p in prompts]
        out += [("watermarked + trigger", ctx.watermarked, triggered), ("attacked + trigger", ctx.attacked[-1], triggered)]
    return out


@torch.no_grad()
def write_grid(ctx: EvalContext, folder: Path, n: int = 8) -> dict:
    """Generate the grid into `folder` (samples.png, samples.json); return what samples.json holds."""
    s = ctx.world.sampling
    strips, names = [], []
    for name, ref, prompts in rows(ctx, n):
        with ctx.model(ref) as unet:
            images = generate(ctx.world.pipeline_with(unet=unet), prompts, ctx.seed, s.steps, s.guidance_scale,
                              s.resolution)
        strips.append(torch.cat(list(images), dim=2))  # (3, H, n W)
        names.append({"row": name, "prompt": prompts[0] if len(set(prompts)) == 1 else None})
    grid = (torch.cat(strips, dim=1).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    with atomic_file(folder / "samples.png") as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    meta = {"rows": names, "n": n, "resolution": s.resolution, "prompts": ctx.world.data.prompts(n)}
    (folder / "samples.json").write_text(json.dumps(meta, indent=1))
    return meta
