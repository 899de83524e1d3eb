"""Build a world ahead of time, measure its quality, ship a build, or time one run on it.

    python -m bench.tools.world build   [model=tiny] [overrides...]   # builds from scratch (model.source=build)
    python -m bench.tools.world quality [model=tiny] [overrides...]   # -> results/world/quality.json, samples.png
    python -m bench.tools.world ship    [overrides...]                # a built tiny world -> bench/world/tiny_world/
    python -m bench.tools.world runtime [overrides...]                 # -> results/world/runtime.json

`model=tiny` loads the world shipped with the package (`bench/world/tiny_world/`, checked against its
fingerprint) and builds nothing. `build` always builds on this machine (`model.source=build`), at the
config's own cache address, never over the shipped world; runs use that build with `model.source=build`.
`quality` measures the chosen world (add `model.source=build` for the rebuild) and prints the shipped
build's figures beside its own. `ship` writes the rebuild's weights, fingerprint, build report and
quality figures into `bench/world/tiny_world/` (a maintainer's step: commit the result). Overrides are
the main app's (`model.unet.steps=1000`, `paths.cache_dir=...`).
`runtime` times one `python -m bench method=watermarkdm attack=full_ft` run (other overrides
pass through, e.g. `method=roma seed=3`) with everything but the world and the FID reference
computed afresh (`bench/world/runtime.py`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from bench.errors import ConfigError
from bench.cache import Cache
from bench.config import compose
from bench.tools.cli import command


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "quality", "ship", "runtime"])
    parser.add_argument("overrides", nargs="*", help="config overrides, default model=tiny data=tiny")
    parser.add_argument("--n-fidelity", type=int, default=500, help="images for prompt fidelity (quality)")
    parser.add_argument("--n-fid", type=int, default=1000, help="generated and real images for FID (quality)")
    args = parser.parse_intermixed_args(argv)
    overrides = list(args.overrides)  # the config's defaults are model=tiny data=tiny; debug=micro picks micro
    if args.command in ("build", "ship"):  # from scratch, at the config's own address: never the shipped world
        overrides.append("model.source=build")
    cfg = compose(overrides)
    from bench.run.runner import build
    from bench.run.stages import world_stage
    from bench.world.base import resolve_device
    model, data = build(cfg.model, "model"), build(cfg.data, "data")
    if model.built:
        print(f"building the {model.name} world if needed (the tiny world: about 10 minutes on 2 CPU cores)...",
              file=sys.stderr)
    world, built = world_stage(Cache(cfg.paths.cache_dir), model, OmegaConf.to_container(cfg.model, resolve=True),
                               data, resolve_device(cfg.device))
    how = ("shipped build, checked and copied into the cache" if getattr(model, "source", "build") == "shipped"
           else "built now") if built else "cached"
    print(f"world {world.address[:12]} ({how})")
    print(f"fingerprint {world.meta.get('fingerprint')}")
    if args.command in ("quality", "ship"):
        from bench.world.quality import measure
        figures = measure(world, Path(cfg.paths.results_dir) / "world", args.n_fidelity, args.n_fid)
        print(json.dumps(figures, indent=1))
    if args.command == "quality" and model.name == "tiny":
        from bench.world import shipped
        if shipped.available():
            man = shipped.manifest()
            print(compare(figures, world.meta.get("fingerprint"), man.get("quality", {}), man["fingerprint"]))
    if args.command == "ship":
        return ship(world, cfg, model, figures)
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


def compare(figures: dict, fingerprint: str | None, shipped_figures: dict, shipped_print: str) -> str:
    """This world's quality figures beside the shipped build's."""
    rows = [("fingerprint", fingerprint, shipped_print)]
    for key in ("prompt_fidelity", "fid_generated_vs_holdout", "fid_attacker_data_vs_holdout", "fid_n"):
        rows.append((key, figures.get(key), shipped_figures.get(key)))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"{'':30s} {'this world':>18s} {'shipped':>18s}"]
    lines += [f"{k:30s} {fmt(a):>18s} {fmt(b):>18s}" for k, a, b in rows]
    return "\n".join(lines)


def ship(world, cfg, model, figures: dict) -> int:
    """Write the built tiny world into the package (`bench.world.shipped.export`) with its quality figures."""
    import platform

    import torch

    from bench.run.stages import NOT_BUILT
    from bench.world import shipped
    if model.name != "tiny":
        raise ConfigError("Only the tiny world ships with the package: run `ship` with model=tiny.")
    folder = Path(world.clip_path).parent
    build_config = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k not in NOT_BUILT}
    extra = {"quality": figures, "built_with": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                                                "machine": platform.machine(), "python": platform.python_version()},
             "build_address": world.meta["build_address"]}
    man = shipped.export(folder, shipped.SHIPPED, build_config, extra)
    size = sum(f["size"] for f in man["files"].values())
    print(f"shipped world written to {shipped.SHIPPED}: fingerprint {man['fingerprint']}, {size / 1e6:.1f} MB")
    return 0


main = command(_main)

if __name__ == "__main__":
    sys.exit(main())
