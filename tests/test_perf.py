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


def test_suite_cost_from_the_suites_records_sums_and_projects_by_hand(tmp_path):
    """scripts/suite_cost.py --suite: spent = every run's attack + evaluate seconds, each (attack, seed)'s null attack
    once and each (method, seed)'s embedding once; each missing cell at its attack's median, a missing method=none
    cell at the evaluation's median only (its attack is the null attack). Records written here: suite cells of
    `full_ft` (aiao, roma, none) and `prune` (aiao), and one run that is not a suite cell (another metrics label)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import suite_cost

    def write(name, method, attack, seed, attack_s, null_s, eval_s, embed_s, metrics="default", paused=None):
        labels = {"model": "tiny", "data": "tiny", "method": method, "attack": attack, "metrics": metrics}
        timings = {"attack": {"seconds": attack_s + null_s, "null_seconds": null_s}, "evaluate": {"seconds": eval_s}}
        if paused:  # a run with CPU seconds whose wall clock a pause stretched `paused` times: counted by CPU, its
            # embedding (built by this run) too
            timings = {"attack": {"cpu_seconds": attack_s + null_s, "null_cpu_seconds": null_s,
                                  "seconds": paused * (attack_s + null_s), "null_seconds": paused * null_s},
                       "evaluate": {"cpu_seconds": eval_s, "seconds": paused * eval_s},
                       "embed": {"built": True, "cpu_seconds": embed_s, "seconds": paused * embed_s}}
        rec = {"status": "complete", "method": method, "attack": attack, "seed": seed, "identity": {"labels": labels},
               "metrics": {"embed_seconds": {"value": paused * embed_s if paused else embed_s}}, "timings": timings}
        (tmp_path / "records" / name).mkdir(parents=True)
        (tmp_path / "records" / name / "record.json").write_text(json.dumps(rec))

    k = 36.0  # seconds large enough that a tenth of a core-hour tells the sums apart
    # aiao's seed-0 embedding: 300 k CPU s stretched to 3,000 k wall s by a pause; run c built it and has the CPU seconds
    write("a", "aiao", "full_ft", 0, 100 * k, 60 * k, 50 * k, 3000 * k)
    write("b", "roma", "full_ft", 0, 200 * k, 0.5, 70 * k, 500 * k)  # the null attack was built by run a
    write("n", "none", "full_ft", 0, 0.5, 0.0, 30 * k, None)  # its "marked" model is the base: the null, cached
    write("c", "aiao", "prune", 0, 1 * k, 0.2, 40 * k, 300 * k, paused=10)
    write("d", "aiao", "full_ft", 0, 999 * k, 0.0, 999 * k, 300 * k, metrics="default[fid.n_images=8]")
    records, methods, attacks = suite_cost.suite_records(tmp_path, seeds=1)
    assert sorted(r["method"] + r["attack"] for r in records) == ["aiaofull_ft", "aiaoprune", "nonefull_ft",
                                                                  "romafull_ft"]
    text = suite_cost.measured(records, ["aiao", "none", "roma"], ["full_ft", "prune"], seeds=1)
    spent = k * ((100 + 50) + (200 + 70) + 30 + (1 + 40) + 60 + 300 + 500) + 0.5 + 0.2
    missing = k * ((1 + 40) + 40)  # prune: roma's cell at prune's medians, none's at prune's evaluation median
    assert f"Done: 4 runs, {spent / 3600:.1f} core-hours" in text
    assert f"Projected whole suite: {(spent + missing) / 3600:.1f} core-hours" in text
    assert "| `full_ft` | 3 | 5400 [3600, 7200] | 1800 [1080, 2520] | 2160 |" in text  # none left out of the attack
    assert "1 of the 4 runs record their stages' CPU seconds" in text
    assert "No projection" in suite_cost.measured(records, ["aiao", "roma"], ["full_ft", "prune", "noise"], seeds=1)


def test_search_cost_sums_each_searchs_trials_and_its_fresh_seed_reruns(tmp_path):
    """scripts/suite_cost.py's search table: a search's trial seconds from its trials.csv, its re-run from the
    exported attack's records at seeds other than the search's (CPU seconds where a stage has them), nothing else."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import suite_cost
    assert suite_cost.search_cost(tmp_path).startswith("No searches here yet")
    search = tmp_path / "search" / "roma-full_ft-s0"
    search.mkdir(parents=True)
    (search / "trials.csv").write_text("trial,objective,seconds\n0,1.0,10\n1,2.0,20\n2,,3600\n")
    (search / "best.json").write_text(json.dumps({"settings": {"method": "roma", "run_seed": 0},
                                                  "export": "x/conf/attack/full_ft_worst_roma.yaml"}))

    def write(name, method, attack, seed, timings):
        (tmp_path / "records" / name).mkdir(parents=True)
        (tmp_path / "records" / name / "record.json").write_text(json.dumps(
            {"status": "complete", "method": method, "attack": attack, "seed": seed, "timings": timings}))
    write("r1", "roma", "full_ft_worst_roma", 1, {"attack": {"seconds": 700}, "evaluate": {"seconds": 200}})
    write("r2", "roma", "full_ft_worst_roma", 2, {"embed": {"cpu_seconds": 1800, "seconds": 9000},
                                                  "evaluate": {"seconds": 900}})
    write("r0", "roma", "full_ft_worst_roma", 0, {"attack": {"seconds": 99999}})  # the search's own seed: no re-run
    write("w1", "watermarkdm", "full_ft_worst_roma", 1, {"attack": {"seconds": 99999}})  # another method
    text = suite_cost.search_cost(tmp_path)
    assert "| `roma-full_ft-s0` | 3 | 20 [10, 3600] | 3630 | 2 runs | 3600 |" in text
    assert "trials 1.01 core-hours, re-runs 1.00, together 2.01 core-hours, about 1.0 h of wall time" in text
