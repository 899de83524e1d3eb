"""`python -m bench.tools.perf` on the micro world: the JSON has every field with positive numbers (no timing
assertion), and its embedding loop is WatermarkDM's own."""
from __future__ import annotations

import json
import subprocess
import sys

import torch

import bench.training
import methods.watermarkdm
from bench.tools.perf import Memory, embed_phase
from bench.run.runner import build
from tests.helpers import ROOT, SHRINK, compose_cfg


def test_perf_writes_positive_figures(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.tools.perf", "model=micro", "steps=2", "warmup=1", "gen_batches=[2]",
                           f"paths.results_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "perf" / "micro-fp32-32-b1.json"
    assert "ratio" in proc.stdout and str(out) in proc.stdout
    r = json.loads(out.read_text())
    assert r["model"] == "micro" and r["batch"] == 1 and r["train_precision"] == "fp32" and r["attention"]["unet_sdpa"]
    for phase in ("embed", "attack"):
        p = r[phase]
        assert p["ratio"] > 0 and len(p["ratios"]) == 2 and len(p["losses"]) == 4
        for loop in ("harness", "bare"):
            assert len(p[loop]["seconds"]) == 2 and p[loop]["steps_per_s"] > 0 and p[loop]["peak_gb"] > 0
            assert {"state_gb", "step_gb", "median_s"} <= set(p[loop])
    (g,) = r["generation"]
    assert g["batch"] == 2 and g["images_per_s"] > 0 and g["peak_gb"] > 0 and r["world_gb"] > 0


def test_perf_embedding_loop_is_watermarkdms(micro_world, monkeypatch):
    """The timed loop takes the same steps as `TriggerBackdoor.embed` (same losses), bare steps in between."""
    method = build(compose_cfg([*SHRINK, "method=watermarkdm", "method.batch_size=1", "method.clean_weight=0",
                                "method.steps=3"]).method, "method")
    opts = {"batch": 1, "steps": 1, "warmup": 1, "share_unet": False}
    latents, text = micro_world.encoded("attacker").batch(range(4))
    timed = embed_phase(micro_world, method, (latents, text), opts, Memory(torch.device("cpu")))
    seen = []
    monkeypatch.setattr(methods.watermarkdm, "optimise",
                        lambda *a, **k: seen.append(bench.training.optimise(*a, **k)) or seen[-1])
    method.embed(micro_world, method.make_key(0, micro_world))
    assert timed["losses"] == seen[0] and len(seen[0]) == 3
