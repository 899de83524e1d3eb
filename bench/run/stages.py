"""The cached stages: world, embed, attack, evaluate. Each returns what the next one reads."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch

from bench.cache import Cache, address_of, files_digest, weights_digest
from bench.commitment import commit
from bench.diffusion import ENCODING_VERSION, GEN_BATCH
from bench.errors import ConfigError
from bench.metrics.base import EvalContext, ModelRef
from bench.training import check_training
from bench.world import shipped
from bench.world.base import World, load_world, model_state, read_weights, split_weights, write_weights
from methods.base import Key, MethodCard

log = logging.getLogger(__name__)
# model settings that do not change how a world is built (so not its address)
NOT_BUILT = ("unet_weights", "eval", "sampling", "train_precision", "gradient_checkpointing", "optimizer", "source")
TRAIN_DEFAULTS = {"train_precision": "fp32", "gradient_checkpointing": False, "optimizer": "adamw"}


def training_options(model_cfg: dict) -> dict:
    """The model's training options that differ from the defaults: part of embed and attack addresses (a bf16
    embedding is another artifact), absent for the defaults so fp32 artifacts keep their addresses."""
    return {k: model_cfg[k] for k, v in TRAIN_DEFAULTS.items() if k in model_cfg and model_cfg[k] != v}


def world_stage(cache: Cache, model, model_cfg: dict, data, device: torch.device,
                allow_build: bool = True) -> tuple[World, bool]:
    """Build (micro/tiny/sd15_random, cached) or locate (pretrained) the world and load it; return (world, built).

    The world carries the model's training settings (`world.training`, read by every training loop through
    `bench.training.Amp.of`) and generation batch (`world.gen_batch`); a generation batch other than the default
    is part of the world's address (it changes the images in their last bits)."""
    check_training(model.training.precision, model.training.optimizer, device)  # fp16 on a CPU: refused here
    if model.built and model.source == "shipped":  # the committed build: checked, copied into the cache, never built
        build_key = {k: v for k, v in model_cfg.items() if k not in NOT_BUILT}
        man = shipped.check_config(build_key)
        art = cache.get_or_build("world", f"shipped-{shipped.FORMAT}", {"fingerprint": man["fingerprint"]},
                                 lambda out: shipped.materialize(out))
        folder, clip, address, built = art.path / "pipeline", str(art.path / "clip"), art.address, art.built
        fingerprint = shipped.pipeline_fingerprint(folder)  # on every load: the cached copy may have been edited
        if fingerprint != man["fingerprint"]:
            raise ConfigError(f"The cached copy of the shipped tiny world ({folder.parent}) is not the shipped build: "
                              "its weight files were changed after they were copied there. Delete that folder; the "
                              "next run copies the shipped world again (after checking it).")
    elif model.built:  # what evaluation, training options or weight overrides change is not part of the build
        build_key = {k: v for k, v in model_cfg.items() if k not in NOT_BUILT}
        if not allow_build and not cache.path_for("world", address_of("world", model.version, build_key)).is_dir():
            raise ConfigError(f"The {model.name} world this needs ({address_of('world', model.version, build_key)[:12]})"
                              f" is not in the cache '{cache.root}', and it is not built on a file's say-so. Build it "
                              f"yourself with `python -m bench.tools.world build model=<name>` (or run the sweep that made "
                              f"the key), or pass --cache pointing at the cache that holds it.")
        art = cache.get_or_build("world", model.version, build_key, model.build)
        folder, clip, address, built = art.path / "pipeline", str(art.path / "clip"), art.address, art.built
        fingerprint = world_fingerprint(cache, art.address, folder)
    else:
        folder, clip, address, built = model.path, model.clip_path, address_of("world", "pretrained", model_cfg), False
    if model.unet_weights:
        address = address_of("world", "unet-weights", {"base": address, "weights": model.weights_identity()})
    # the encoded datasets' batching (EncodedDataset) moves the last bits of every stage's inputs
    address = address_of("world", f"encoding-{ENCODING_VERSION}", {"base": address})
    if model.gen_batch != GEN_BATCH:
        address = address_of("world", "gen-batch", {"base": address, "gen_batch": model.gen_batch})
    world = load_world(folder, model.sampling, address, device, model.precision, clip)
    world.training, world.gen_batch = model.training, model.gen_batch
    if model.unet_weights:  # a suspect model: its UNet, and its text encoder if the file carries one
        unet_state, text_state = split_weights(read_weights(model.unet_weights))
        world.pipe.unet.load_state_dict(unet_state)
        if text_state is not None:
            world.pipe.text_encoder.load_state_dict(text_state)
    world.data = data
    world.meta["model"] = model_cfg  # what rebuilds this world (bench.tools.verify reads it from an embedding)
    if model.built:
        world.meta["fingerprint"] = fingerprint
        world.meta["build_address"] = art.address  # its folder in the cache (world.address also names the encoding)
    return world, built


def world_fingerprint(cache: Cache, address: str, folder: Path) -> str:
    """sha256 over a built world's weight files (cached once per build).

    Two builds of one config can differ in their last bits (thread count, hardware), so the address says which
    config a record used and the fingerprint which build: records carry it, and the leaderboard flags a row
    whose seeds ran on different builds."""
    def compute() -> dict:
        return {"sha256": weights_digest(folder)}

    return cache.get_or_compute_json("world-fingerprint", "1", {"world": address}, compute)[0]["sha256"][:16]


def embed_stage(cache: Cache, world: World, method, method_cfg: dict, seed: int,
                data_cfg: dict | None = None) -> tuple[ModelRef, Key, str, bool]:
    """Embed the watermark once per (world, data, method config, seed); return (model, key, key address, built).

    The data config is part of the address: the owner's data is what the embedding trains on."""
    key_cfg = {"world": world.address, "data": data_cfg, "method": method_cfg, "seed": seed,
               **training_options(world.meta.get("model", {}))}
    if not method.changes_model:  # the unmarked model is the base model itself: nothing to store
        return ModelRef(world.address), Key(), address_of("embed", method.version, key_cfg), False

    def build(tmp: Path) -> None:
        torch.manual_seed(seed)
        start = time.perf_counter()  # key making counts: some methods train part of the key (SleeperMark stage 1)
        key = method.make_key(seed, world)
        key.meta["seed"] = seed
        unet = method.embed(world, key)
        write_weights(unet.state_dict(), tmp / "unet.safetensors")
        key.save(tmp / "key")
        # the owner's public commitment to the key, made with the model (bench.commitment); its nonce stays with the key
        nonce = hashlib.sha256(f"wmbench/commitment-nonce/{method.name}/{seed}".encode()).hexdigest()
        (tmp / "key" / "opening.json").write_text(json.dumps({"nonce": nonce}))
        (tmp / "commitment.json").write_text(json.dumps(
            commit(key.tensors, key.meta, nonce, files_digest(tmp, [tmp / "unet.safetensors"])), indent=1))
        (tmp / "world.json").write_text(json.dumps({"address": world.address, "model": world.meta.get("model"),
                                                    "unet_config": dict(world.unet.config)}, indent=1, default=str))
        (tmp / "embed.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))

    art = cache.get_or_build("embed", method.version, key_cfg, build)
    return ModelRef(art.address, art.path / "unet.safetensors"), Key.load(art.path / "key"), art.address, art.built


def key_commitment(folder: Path | None) -> dict | None:
    """The public commitment written beside a key at embedding (None: no key, or an embedding made before
    commitments existed)."""
    path = None if folder is None else folder.parent / "commitment.json"
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def key_folder(cache: Cache, key_address: str) -> Path | None:
    """Where the owner's key of an embedding lives (None for a method that stores none)."""
    folder = cache.path_for("embed", key_address) / "key"
    return folder if folder.is_dir() else None


def attack_stage(cache: Cache, world: World, source: ModelRef, attack, attack_cfg: dict, data_cfg: dict | None = None,
                 card: MethodCard | None = None) -> tuple[list[ModelRef], bool]:
    """Attack `source` once per (source, data, attack config); return its checkpoints (id 0 = source).

    An attack that reads the method's public card (`attack.uses_card`: adaptive attacks) also gets it,
    and the card is then part of the address; no attack ever sees the key."""
    key_cfg = {"model": source.address, "data": data_cfg, "attack": attack.address_config(attack_cfg),
               **training_options(world.meta.get("model", {}))}
    if attack.uses_card:
        key_cfg["card"] = card.as_dict() if card is not None else None

    def build(tmp: Path) -> None:
        (tmp / "ckpt").mkdir()
        # the source's UNet only: a source carrying its own fine-tuned text encoder (no method makes one
        # today) would be attacked with the world's
        unet = world.fresh_unet(split_weights(read_weights(source.weights))[0] if source.weights else None)

        def save(step: int, model, text_encoder=None) -> None:
            if step > 0:
                write_weights(model_state(model, text_encoder), tmp / "ckpt" / f"step-{step:07d}.safetensors")

        attack.run(world, unet, save, card)
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


def evaluate_stage(ctx: EvalContext, collectors: dict, seconds: dict | None = None) -> tuple[dict, dict]:
    """Run every collector, then every collector's `finalise` (verdicts derived from all collectors' results, e.g.
    the utility budget; nothing by default); return (metrics, curves) merged over collectors. `seconds`, if given,
    receives each collector's wall time (the record keeps it: where a run's evaluation goes)."""
    metrics, curves = {}, {}
    ctx.collectors = dict(collectors)
    for name, collector in collectors.items():
        start = time.perf_counter()
        out = collector.compute(ctx)
        metrics.update(out["metrics"])
        curves.update(out["curves"])
        took = time.perf_counter() - start
        if seconds is not None:
            seconds[name] = round(took, 3)
        log.info("metric %s: %.1f s", name, took)
    for collector in collectors.values():
        metrics.update(collector.finalise(metrics, curves, ctx))
    return metrics, curves
