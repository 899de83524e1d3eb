"""How long one run takes on a built world: `python -m bench.tools.world runtime [overrides...]`.

The run (`python -m bench`, default `method=watermarkdm attack=full_ft`, in a fresh process so
that start-up counts) goes to a temporary results folder whose cache holds only links to the
world and to the FID reference statistics of the main cache: those are built once per machine,
everything else (embedding, both attacks, samples, every metric) is computed as on a first run.
Prints the wall time and the seconds of each stage and writes them to
`<results>/world/runtime.json`. Measure on a quiet machine: other jobs on the same cores
change the figure more than anything in the code.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cache import link_stages, write_json_atomic

TARGET_SECONDS = 180.0  # the tiny world's goal for one watermarkdm x full_ft run on 2 CPU cores
SHARED_STAGES = ("world", "fid-ref")  # built once per machine; linked, not rebuilt


def measure(cache_dir: Path, results_dir: Path, overrides: list[str], target: float | None = None) -> dict:
    """Time one run in a scratch folder sharing `cache_dir`'s world and FID reference; return figures
    (`target`: the seconds to compare with, None for none)."""
    run_args = ["method=watermarkdm", "attack=full_ft", *overrides]
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as scratch:
        scratch = Path(scratch)
        shared = link_stages(cache_dir, scratch / "cache", SHARED_STAGES)
        cmd = [sys.executable, "-m", "bench", *run_args, f"paths.results_dir={scratch}",
               f"paths.cache_dir={scratch / 'cache'}", "-m"]
        print("timing:", " ".join(cmd[1:]), file=sys.stderr, flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=os.environ.copy())
        wall = time.perf_counter() - start
        records = sorted((scratch / "records").glob("*/record.json"))
        record = json.loads(records[0].read_text()) if records else {}
        built_here = [p for p in (scratch / "cache").glob("*/[0-9a-f]*") if p.is_dir() and not p.is_symlink()]
    figures = {
        "command": "python -m bench " + " ".join(run_args),
        "exit_status": proc.returncode,
        "status": record.get("status"),
        "wall_seconds": round(wall, 1),
        "stage_seconds": {k: v.get("seconds") for k, v in record.get("timings", {}).items()},
        "target_seconds": target,
        "within_target": None if target is None else proc.returncode == 0 and wall <= target,
        "reused": shared,
        "fid_reference_reused": any(s.startswith("fid-ref/") for s in shared),
        "artifacts_built": len(built_here),
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "cpu_count": os.cpu_count(),
    }
    write_json_atomic(results_dir / "world" / "runtime.json", figures)
    return figures
