"""Build a world ahead of time, measure its quality, or time one run on it.

    python -m bench.world build   [model=tiny] [overrides...]
    python -m bench.world quality [model=tiny] [overrides...]   # -> results/world/quality.json, samples.png
    python -m bench.world runtime [overrides...]                 # -> results/world/runtime.json

Anything that needs the world builds it on first use anyway; `build` only does it up front,
with progress bars. Overrides are the main app's (`model.unet.steps=1000`, `paths.cache_dir=...`).
`runtime` times one `python -m bench method=watermarkdm attack=full_ft` run (other overrides
pass through, e.g. `method=roma seed=3`) with everything but the world and the FID reference
computed afresh (`bench/world/runtime.py`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import bench.config  # noqa: F401
from bench.cache import Cache
from bench.errors import BenchError

CONF = Path(__file__).resolve().parents[2] / "conf"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "quality", "runtime"])
    parser.add_argument("overrides", nargs="*", help="config overrides, default model=tiny data=tiny")
    parser.add_argument("--n-fidelity", type=int, default=500, help="images for prompt fidelity (quality)")
    parser.add_argument("--n-fid", type=int, default=1000, help="generated and real images for FID (quality)")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    overrides = ["model=tiny", "data=tiny", *args.overrides]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    from bench.runner import build
    from bench.stages import world_stage
    from bench.world.base import resolve_device
    from omegaconf import OmegaConf
    try:
        model, data = build(cfg.model, "model"), build(cfg.data, "data")
        if model.built:
            print(f"building the {model.name} world if needed (the tiny world: about 10 minutes on 2 CPU cores)...",
                  file=sys.stderr)
        world, built = world_stage(Cache(cfg.paths.cache_dir), model, OmegaConf.to_container(cfg.model, resolve=True),
                                   data, resolve_device(cfg.device))
    except BenchError as err:
        print(f"\nerror: {err}\n", file=sys.stderr)
        return 2
    print(f"world {world.address[:12]} ({'built now' if built else 'cached'})")
    if args.command == "quality":
        from bench.world.quality import measure
        figures = measure(world, Path(cfg.paths.results_dir) / "world", args.n_fidelity, args.n_fid)
        print(json.dumps(figures, indent=1))
    if args.command == "runtime":
        from bench.world.runtime import TARGET_SECONDS, measure
        run_overrides = [o for o in args.overrides if not o.startswith("paths.")]
        target = TARGET_SECONDS if model.name == "tiny" else None  # the goal is the tiny world's
        figures = measure(Path(cfg.paths.cache_dir), Path(cfg.paths.results_dir), run_overrides, target)
        print(json.dumps(figures, indent=1))
        verdict = "" if target is None else (f" ({'within' if figures['within_target'] else 'over'} the "
                                              f"{target:.0f} s target)")
        print(f"one run: {figures['wall_seconds']:.0f} s wall{verdict}; stages: {figures['stage_seconds']}")
        return 0 if figures["exit_status"] == 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
