"""`python -m bench`: the Hydra app. One job = one (model, data, method, attack, seed) run.

    python -m bench method=watermarkdm attack=full_ft -m
    python -m bench method=none,watermarkdm attack=none,full_ft -m

Configuration errors print one paragraph and exit with status 2 before any work; a run that
fails during its stages is recorded as failed and the sweep goes on (exit status 1 at the end).
"""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

import bench.config  # noqa: F401  (registers the ${scale:...} resolver)
from bench.errors import BenchError

log = logging.getLogger("bench")
FAILED = {"config": 0, "run": 0}  # jobs of this process that failed (the basic launcher runs them here)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from bench.runner import run  # heavy imports after Hydra has parsed the command line (fast --help)
    try:
        record = run(cfg)
    except BenchError as err:
        print(f"\nerror: {err}\n", file=sys.stderr)
        FAILED["config"] += 1
        return
    if record["status"] != "complete":
        FAILED["run"] += 1


if __name__ == "__main__":
    main()
    sys.exit(2 if FAILED["config"] else 1 if FAILED["run"] else 0)
