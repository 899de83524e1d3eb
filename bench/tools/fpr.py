"""False-positive rate of a method's verifier over many independent keys, on models that never
saw any key: the base model and the base model after an attack (default `full_ft`).

    python -m bench.tools.fpr method=aiao                      # 20 keys, the tiny world, full_ft
    python -m bench.tools.fpr method=sleepermark n_keys=50 model=micro data=micro

Any override of the main config works (model, data, attack, metrics.verification.*). Keys are
drawn from seeds `key_seed0 .. key_seed0 + n_keys - 1`, away from the seeds runs use. For most
methods the key exists before embedding (`make_key`); for methods whose key is a product of
embedding (`key_from_embedding`, e.g. ActiveMark's trained decoder) each key is embedded (cached).
Every verification is the verification collector's own (`Verification.verify_one`, cached), so an
interrupted measurement resumes. The summary is printed and written to
`<results>/fpr/<model>-<method>-<attack>.json`.
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from bench.tools.cli import command
from bench.config import compose
from bench.cache import write_text_atomic
from bench.cache import Cache
from bench.errors import BenchError
from bench.metrics.base import EvalContext, ModelRef
from bench.run.runner import build
from bench.run.stages import attack_stage, embed_stage, world_stage
from bench.world.base import resolve_device

log = logging.getLogger("bench.tools.fpr")
OWN = {"n_keys": 20, "key_seed0": 1000}


def measure(cfg, n_keys: int, key_seed0: int) -> dict:
    """Verify `n_keys` keys against the null models; return the per-key results and the summary."""
    config = OmegaConf.to_container(cfg, resolve=True)
    model, data = build(cfg.model, "model"), build(cfg.data, "data")
    method, attack = build(cfg.method, "method"), build(cfg.attack, "attack")
    verification = build(cfg.metrics.verification, "metrics")
    if not method.verifiable:
        raise BenchError(f"method={method.name} has no verifier; pick a watermarking method.")
    cache = Cache(cfg.paths.cache_dir)
    world, _ = world_stage(cache, model, config["model"], data, resolve_device(cfg.device))
    base = ModelRef(world.address)
    card = method.card(config["method"])
    nulls = {"base": base, f"base+{attack.name}": attack_stage(cache, world, base, attack, config["attack"], config["data"],
                                                               card)[0][-1]}
    # one context for every key: the attacked null model is loaded once and kept (EvalContext keeps one)
    shared = EvalContext(world=world, method=method, key=None, key_address="", cache=cache, seed=key_seed0,
                         data_key=config["data"], base=base, watermarked=base, attacked=[], null_attacked=[])
    rows = []
    for seed in tqdm(range(key_seed0, key_seed0 + n_keys), desc=f"fpr {method.name}", mininterval=1.0):
        if method.key_from_embedding:
            _, key, key_address, _ = embed_stage(cache, world, method, config["method"], seed, config["data"])
        else:
            key_address = {"world": world.address, "data": config["data"], "method": config["method"], "seed": seed}
            key = KeyFromSeed(method, seed, world)
        ctx = replace(shared, key=key, key_address=key_address, seed=seed)
        for name, ref in nulls.items():  # the verification collector's own (cached) verification of one model
            rows.append({"key_seed": seed, "null_model": name, **verification.verify_one(ctx, ref)})
    summary = {}
    for name in nulls:
        mine = [r for r in rows if r["null_model"] == name]
        summary[name] = {
            "n_keys": len(mine),
            "false_positives": sum(r["detected"] for r in mine),
            "fpr": sum(r["detected"] for r in mine) / len(mine),
            "mean_bit_acc": _mean([r["bit_acc"] for r in mine]),
            "mean_verification_rate": _mean([r["verification_rate"] for r in mine]),
            "min_p_value": min(r["p_value"] for r in mine),
        }
    return {"model": cfg.model.name, "method": method.name, "attack": attack.name,
            "target_fpr": verification.target_fpr, "n_queries": verification.n_queries, "summary": summary,
            "per_key": rows}


class KeyFromSeed:
    """`method`'s key of `seed`, drawn when a verifier first reads it: a verification found in the cache never
    draws it (some keys train: SleeperMark's stage 1)."""

    def __init__(self, method, seed: int, world):
        self._args, self._key = (method, seed, world), None

    def __getattr__(self, name: str):  # tensors, meta (and anything else a verifier reads of a Key)
        if name.startswith("_"):
            raise AttributeError(name)
        if self._key is None:
            method, seed, world = self._args
            self._key = method.make_key(seed, world)
            self._key.meta["seed"] = seed
        return getattr(self._key, name)


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _main(argv: list[str]) -> int:
    own = dict(OWN)
    overrides = []
    for arg in argv:
        name, _, value = arg.partition("=")
        if name in own:
            own[name] = int(value)
        else:
            overrides.append(arg)
    cfg = compose(overrides)
    result = measure(cfg, own["n_keys"], own["key_seed0"])
    out = Path(cfg.paths.results_dir) / "fpr" / f"{result['model']}-{result['method']}-{result['attack']}.json"
    write_text_atomic(out, json.dumps(result, indent=1))
    print(f"\n{result['method']} on {result['model']}: {own['n_keys']} keys, target FPR {result['target_fpr']:g}, "
          f"{result['n_queries']} queries per verification")
    for name, s in result["summary"].items():
        score = (f"bit acc {s['mean_bit_acc']:.3f}" if s["mean_bit_acc"] is not None
                 else f"verification rate {s['mean_verification_rate']:.3f}")
        print(f"  {name:>16}: {s['false_positives']}/{s['n_keys']} detected (FPR {s['fpr']:.3f}), mean {score}, "
              f"min p {s['min_p_value']:.3g}")
    print(f"written: {out}")
    return 0


main = command(_main)

if __name__ == "__main__":
    torch.set_grad_enabled(True)
    sys.exit(main(sys.argv[1:]))
