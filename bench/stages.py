"""The cached stages: world, embed, attack, evaluate. Each returns what the next one reads."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from bench.cache import Cache, address_of
from bench.metrics.base import EvalContext, ModelRef
from bench.world.base import World, load_world, model_state, read_weights, split_weights, write_weights
from methods.base import Key

log = logging.getLogger(__name__)


def world_stage(cache: Cache, model, model_cfg: dict, data, device: torch.device) -> tuple[World, bool]:
    """Build (micro/tiny, cached) or locate (pretrained) the world and load it; return (world, built)."""
    if model.built:  # what evaluation or weight overrides change is not part of the build
        build_key = {k: v for k, v in model_cfg.items() if k not in ("unet_weights", "eval", "sampling")}
        art = cache.get_or_build("world", model.version, build_key, model.build)
        folder, clip, address, built = art.path / "pipeline", str(art.path / "clip"), art.address, art.built
    else:
        folder, clip, address, built = model.path, model.clip_path, address_of("world", "pretrained", model_cfg), False
    if model.unet_weights:
        address = address_of("world", "unet-weights", {"base": address, "weights": model.weights_identity()})
    world = load_world(folder, model.sampling, address, device, model.precision, clip)
    if model.unet_weights:  # a suspect model: its UNet, and its text encoder if the file carries one
        unet_state, text_state = split_weights(read_weights(model.unet_weights))
        world.pipe.unet.load_state_dict(unet_state)
        if text_state is not None:
            world.pipe.text_encoder.load_state_dict(text_state)
    world.data = data
    return world, built


def embed_stage(cache: Cache, world: World, method, method_cfg: dict, seed: int) -> tuple[ModelRef, Key, str, bool]:
    """Embed the watermark once per (world, method config, seed); return (model, key, key address, built)."""
    key_cfg = {"world": world.address, "method": method_cfg, "seed": seed}
    if method.name == "none":  # the unmarked model is the base model itself: nothing to store
        return ModelRef(world.address), Key(), address_of("embed", method.version, key_cfg), False

    def build(tmp: Path) -> None:
        torch.manual_seed(seed)
        start = time.perf_counter()  # key making counts: some methods train part of the key (SleeperMark stage 1)
        key = method.make_key(seed, world)
        key.meta["seed"] = seed
        unet = method.embed(world, key)
        write_weights(unet.state_dict(), tmp / "unet.safetensors")
        key.save(tmp / "key")
        (tmp / "embed.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))

    art = cache.get_or_build("embed", method.version, key_cfg, build)
    return ModelRef(art.address, art.path / "unet.safetensors"), Key.load(art.path / "key"), art.address, art.built


def attack_stage(cache: Cache, world: World, source: ModelRef, attack,
                 attack_cfg: dict) -> tuple[list[ModelRef], bool]:
    """Attack `source` once per (source, attack config); return its checkpoints (id 0 = source)."""
    key_cfg = {"model": source.address, "attack": attack_cfg}

    def build(tmp: Path) -> None:
        (tmp / "ckpt").mkdir()
        # the source's UNet only: a source carrying its own fine-tuned text encoder (no method makes one
        # today) would be attacked with the world's
        unet = world.fresh_unet(split_weights(read_weights(source.weights))[0] if source.weights else None)

        def save(step: int, model, text_encoder=None) -> None:
            if step > 0:
                write_weights(model_state(model, text_encoder), tmp / "ckpt" / f"step-{step:07d}.safetensors")

        attack.run(world, unet, save)
        schedule = {"checkpoints": attack.checkpoints, "budgets": [attack.budget(c) for c in attack.checkpoints],
                    "budget_label": attack.budget_label}
        (tmp / "schedule.json").write_text(json.dumps(schedule))

    art = cache.get_or_build("attack", attack.version, key_cfg, build)
    schedule = json.loads((art.path / "schedule.json").read_text())
    refs = []
    for step, budget in zip(schedule["checkpoints"], schedule["budgets"]):
        ckpt = art.path / "ckpt" / f"step-{step:07d}.safetensors"
        address, weights = (f"{art.address}@{step}", ckpt) if step > 0 else (source.address, source.weights)
        refs.append(ModelRef(address, weights, step, budget, schedule["budget_label"]))
    return refs, art.built


def embed_seconds(ref: ModelRef) -> float | None:
    """Seconds the embedding took when it was built (None for the unmarked model)."""
    if ref.weights is None:
        return None
    return json.loads((ref.weights.parent / "embed.json").read_text())["seconds"]


def evaluate_stage(ctx: EvalContext, collectors: dict) -> tuple[dict, dict]:
    """Run every collector; return (metrics, curves) merged over collectors."""
    metrics, curves = {}, {}
    for name, collector in collectors.items():
        start = time.perf_counter()
        out = collector.compute(ctx)
        metrics.update(out["metrics"])
        curves.update(out["curves"])
        log.info("metric %s: %.1f s", name, time.perf_counter() - start)
    return metrics, curves
