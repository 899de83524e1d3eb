"""`python -m bench.tools.world runtime`: one run timed afresh, sharing only the world (and FID reference)."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.cache import link_stages
from tests.helpers import ROOT, SHRINK


def test_runtime_times_a_fresh_run_that_shares_only_the_world(tmp_path, shared_cache, micro_world):
    results = tmp_path / "results"
    scratch_before = set(Path(tempfile.gettempdir()).glob("bench-runtime-*"))
    cache = tmp_path / "cache"  # the shared world linked in; other test workers write into the shared cache meanwhile
    link_stages(shared_cache, cache, ["world"])
    run_overrides = [*SHRINK, "seed=11", "method.steps=20", "attack.steps=10"]  # a short run: the plumbing is the point
    proc = subprocess.run([sys.executable, "-m", "bench.tools.world", "runtime", *run_overrides,
                           f"paths.cache_dir={cache}", f"paths.results_dir={results}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((results / "world" / "runtime.json").read_text())
    assert figures["status"] == "complete" and figures["exit_status"] == 0
    assert f"world/{micro_world.meta['build_address'][:12]}" in figures["reused"]
    assert not any(r.startswith(("embed/", "attack/")) for r in figures["reused"])
    assert figures["artifacts_built"] > 5  # embedding, two attacks, samples, metrics: all computed in the scratch cache
    stages = figures["stage_seconds"]
    assert set(stages) == {"world", "embed", "attack", "evaluate"}
    assert figures["wall_seconds"] >= sum(stages.values())
    assert figures["target_seconds"] is None and figures["within_target"] is None  # the goal is the tiny world's
    assert "one run:" in proc.stdout
    # the scratch folder is gone and the cache it was given gained nothing from the timed run
    assert set(Path(tempfile.gettempdir()).glob("bench-runtime-*")) == scratch_before
    assert {p.name for p in cache.iterdir()} <= {"world", "world-fingerprint"}  # no embedding, attack or metric
