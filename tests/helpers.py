"""Test helpers: the real Hydra config, composed and shrunk to the micro world's CPU budget.

Tests never keep their own copies of configs: they compose `conf/` and override sizes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.config import compose

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

MICRO = ["model=micro", "data=micro"]   # the default world is the tiny one; tests use the micro world
# The micro world at test size (conf/debug/micro.yaml): a few seconds per stage on 2 CPU cores.
SHRINK = [
    "debug=micro",
    # extra overrides for a whole test run, e.g. BENCH_TEST_OVERRIDES="model.train_precision=bf16" runs the
    # micro tests with bf16 autocast (tests/test_precision.py measures how far that is from fp32)
    *os.environ.get("BENCH_TEST_OVERRIDES", "").split(),
]


def compose_cfg(overrides: list[str]):
    """The real config with `overrides` (Hydra's compose API, no app run)."""
    return compose(overrides)


def bench_cli(args: list[str], results: Path, cache: Path | None = None, timeout: int = 900,
              check: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m bench ARGS` with results (and optionally the cache) in the given folders."""
    overrides = [f"paths.results_dir={results}"] + ([f"paths.cache_dir={cache}"] if cache else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    flags = [a for a in args if a.startswith("-")]  # argparse wants options after all overrides
    argv = [a for a in args if not a.startswith("-")] + overrides + flags
    proc = subprocess.run([sys.executable, "-m", "bench", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"bench exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}")
    return proc


def failing_attack(folder: Path) -> str:
    """A test-only `attack=huge` (full_ft with an impossible batch, so it fails at runtime, after the
    config is accepted) in `folder/conf`; returns the override that adds it to Hydra's search path."""
    (folder / "conf" / "attack").mkdir(parents=True, exist_ok=True)
    (folder / "conf" / "attack" / "huge.yaml").write_text("defaults:\n  - full_ft\n  - _self_\n"
                                                         "batch_size: 1000000000000\n")
    return f"hydra.searchpath=[file://{folder / 'conf'}]"


def records(results: Path) -> dict[str, dict]:
    """The records under `results/records`, by run id."""
    out = {}
    for path in (Path(results) / "records").glob("*/record.json"):
        rec = json.loads(path.read_text())
        out[rec["run_id"]] = rec
    return out


def values(record: dict) -> dict:
    """A record's metric values only (what must be identical across identical runs)."""
    return {k: m["value"] for k, m in record["metrics"].items() if k != "embed_seconds"}
