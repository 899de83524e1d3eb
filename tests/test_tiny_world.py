"""The tiny world end to end, from a fresh cache (slow: about 15 minutes on 2 CPU cores).

    bash scripts/test.sh -m slow

Loads the shipped world into a fresh cache, checks its quality goals (prompt fidelity, FID far
below the Fashion-MNIST-vs-MNIST distance) and that they are the manifest's, then runs the README's
main job on it and checks the verdicts a researcher reads off the leaderboard row.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, bench_cli, records, values

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(results folder, cache folder) after `python -m bench.tools.world quality` loaded the shipped world."""
    results = tmp_path_factory.mktemp("tiny-results")
    cache = results / "cache"
    proc = subprocess.run([sys.executable, "-m", "bench.tools.world", "quality", f"paths.results_dir={results}",
                           f"paths.cache_dir={cache}"], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shipped build, checked and copied into the cache" in proc.stdout
    return results, cache


def test_tiny_world_meets_its_quality_goals(tiny):
    results, _ = tiny
    q = json.loads((results / "world" / "quality.json").read_text())
    assert q["prompt_fidelity_n"] == 500 and q["prompt_fidelity"] >= 0.70  # chance is 0.10
    assert q["fid_n"] == 1000
    assert q["fid_generated_vs_holdout"] < 0.6 * q["fid_attacker_data_vs_holdout"]
    assert (results / "world" / "samples.png").stat().st_size > 10_000
    from bench.world import shipped
    shipped_q = shipped.manifest()["quality"]
    assert abs(q["fid_generated_vs_holdout"] - shipped_q["fid_generated_vs_holdout"]) < 5  # threads may differ


def test_main_job_on_the_tiny_world(tiny):
    results, cache = tiny
    proc = bench_cli(["method=watermarkdm", "attack=full_ft", "-m"], results, cache, timeout=3600, check=True)
    assert "| tiny" in proc.stdout and "watermarkdm" in proc.stdout  # the leaderboard row is printed
    (rec,) = records(results).values()
    m = values(rec)
    assert rec["status"] == "complete"
    assert m["verify/watermarked/detected"] and m["verify/watermarked/bit_acc"] > 0.85
    assert not m["verify/attacked/detected"] and m["steps_to_removal"] <= 50  # full fine-tuning removes the trigger
    assert m["false_positives"] == 0
    assert m["fid/base"] < m["fid/watermarked"] < m["fid/attacked"]  # marking costs quality; MNIST fine-tuning more
    assert m["clip_score/base"] > m["clip_score/attacked"]
